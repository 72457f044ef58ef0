//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde-based YAML loaders stop at the first error and forget positions once a value is built.
//! Pipeline validation must report every problem at once with its line and column, so we build
//! our own small tree from yaml-rust2's event parser (maintained, reports byte offsets) and decode
//! it by hand in `decode.rs`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start,
            end: end.max(start),
        }
    }
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    /// A scalar; `quoted` scalars are always strings, plain ones may be numbers or booleans.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A syntax error from the YAML scanner.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

/// Nodes a file may expand to through aliases: far beyond any real pipeline (100,000 `vars`
/// are 200,000 nodes), far below what would exhaust memory (a 767-byte "billion laughs" file
/// of 9 × 9 aliases would be 387 million).
const MAX_NODES: usize = 2_000_000;

/// Parses the file's one YAML document. An empty document is `Value::Null`; a second one is
/// refused rather than ignored (it would be silently left out of the pipeline). A leading
/// UTF-8 byte-order mark is allowed, as editors on Windows write one.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let base = if source.starts_with('\u{feff}') { 3 } else { 0 };
    let offsets = Offsets::new(&source[base..], base);
    let mut builder = Builder {
        source,
        offsets: &offsets,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        error: None,
        nodes: 0,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(&source[base..]);
    let loaded = parser.load(&mut builder, true).map_err(|e| SyntaxError {
        offset: offsets.byte(e.marker()),
        message: e.info().to_string(),
    });
    // Whichever problem comes first in the file.
    match (builder.error, loaded) {
        (Some(ours), Err(theirs)) if theirs.offset < ours.offset => return Err(theirs),
        (Some(ours), _) => return Err(ours),
        (None, Err(theirs)) => return Err(theirs),
        (None, Ok(())) => {}
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        span: Span::default(),
    }))
}

/// yaml-rust2's `Marker::index` counts characters (its docs say bytes); spans are bytes.
struct Offsets {
    /// Byte offset of each character, for non-ASCII sources only.
    table: Option<Vec<usize>>,
    len: usize,
    /// Bytes before what the parser reads (a byte-order mark).
    base: usize,
}

impl Offsets {
    fn new(source: &str, base: usize) -> Self {
        let table = (!source.is_ascii()).then(|| source.char_indices().map(|(b, _)| b).collect());
        Offsets {
            table,
            len: source.len(),
            base,
        }
    }
    fn byte(&self, mark: &Marker) -> usize {
        self.base
            + match &self.table {
                None => mark.index().min(self.len),
                Some(t) => t.get(mark.index()).copied().unwrap_or(self.len),
            }
    }
}

enum Open {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
        nodes_before: usize,
    },
    Map {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
        nodes_before: usize,
    },
}

struct Builder<'s> {
    source: &'s str,
    offsets: &'s Offsets,
    stack: Vec<Open>,
    /// Each anchored node with the number of nodes in it.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// Nodes built so far, aliases counted as the copies they make.
    nodes: usize,
    documents: usize,
}

impl Builder<'_> {
    fn push(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            Some(Open::Seq { items, .. }) | Some(Open::Map { items, .. }) => items.push(node),
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }

    /// Plain scalars have no end marker; find where the text ends so carets underline it.
    fn scalar_end(&self, start: usize, text: &str, style: TScalarStyle) -> usize {
        let rest = &self.source[start..];
        match style {
            TScalarStyle::Plain => start + text.len().min(rest.len()),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                let quote = rest.chars().next().unwrap_or('"');
                let body = &rest[quote.len_utf8().min(rest.len())..];
                match body.find(quote) {
                    Some(i) => start + quote.len_utf8() + i + quote.len_utf8(),
                    None => start + rest.len().min(text.len() + 2),
                }
            }
            _ => start + rest.find('\n').unwrap_or(rest.len()),
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = self.offsets.byte(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain) || tag.is_some();
                let end = self.scalar_end(at, &text, style);
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                self.nodes += 1;
                self.push(
                    Node {
                        value,
                        span: Span::new(at, end),
                    },
                    anchor,
                    1,
                );
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, size)) if self.nodes + size > MAX_NODES => {
                    self.error = Some(SyntaxError {
                        offset: at,
                        message: format!(
                            "aliases expand this file to more than {MAX_NODES} values; \
                             refusing it (a \"billion laughs\" file?)"
                        ),
                    })
                }
                Some((node, size)) => {
                    let (mut node, size) = (node.clone(), *size);
                    node.span = Span::new(at, at + 1);
                    self.nodes += size;
                    self.push(node, 0, size);
                }
                None => {
                    self.error = Some(SyntaxError {
                        offset: at,
                        message: "alias names an unknown anchor".into(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq {
                start: at,
                anchor,
                items: Vec::new(),
                nodes_before: self.nodes,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Open::Map {
                start: at,
                anchor,
                items: Vec::new(),
                nodes_before: self.nodes,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else { return };
                let (node, anchor, before) = match open {
                    Open::Seq {
                        start,
                        anchor,
                        items,
                        nodes_before,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            span: Span::new(start, at),
                        },
                        anchor,
                        nodes_before,
                    ),
                    Open::Map {
                        start,
                        anchor,
                        items,
                        nodes_before,
                    } => {
                        let mut pairs = Vec::with_capacity(items.len() / 2);
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        (
                            Node {
                                value: Value::Map(pairs),
                                span: Span::new(start, at),
                            },
                            anchor,
                            nodes_before,
                        )
                    }
                };
                self.nodes += 1;
                let size = self.nodes - before;
                self.push(node, anchor, size);
            }
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error = Some(SyntaxError {
                        offset: at,
                        message: "a second YAML document: a pipeline file holds one \
                                  (remove this `---` and what follows, or merge it into the first)"
                            .into(),
                    });
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_scalars() {
        let src = "a: 1\nb:\n  - x y\n  - 'q'\n";
        let root = parse(src).unwrap();
        let Value::Map(pairs) = &root.value else {
            panic!("not a map")
        };
        assert_eq!(&src[pairs[0].0.span.start..pairs[0].0.span.end], "a");
        let Value::Seq(items) = &pairs[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(&src[items[0].span.start..items[0].span.end], "x y");
        assert_eq!(&src[items[1].span.start..items[1].span.end], "'q'");
    }

    #[test]
    fn unicode_offsets_stay_on_char_boundaries() {
        let src = "näme: ünïcode\nbad: [\n";
        let err = parse(src).unwrap_err();
        assert!(src.is_char_boundary(err.offset));
        let ok = parse("näme: ünïcode\nx: y\n").unwrap();
        let Value::Map(pairs) = &ok.value else {
            panic!()
        };
        let s = "näme: ünïcode\nx: y\n";
        assert_eq!(&s[pairs[1].0.span.start..pairs[1].0.span.end], "x");
    }

    #[test]
    fn a_byte_order_mark_is_allowed_and_spans_still_point_at_the_text() {
        let src = "\u{feff}a: 1\nb: x\n";
        let root = parse(src).unwrap();
        let Value::Map(pairs) = &root.value else {
            panic!("not a map")
        };
        assert_eq!(&src[pairs[1].1.span.start..pairs[1].1.span.end], "x");
    }

    #[test]
    fn a_second_document_is_refused_where_it_starts() {
        let src = "a: 1\n---\nb: [\n";
        let err = parse(src).unwrap_err();
        assert_eq!(err.offset, 5, "{err:?}");
        assert!(err.message.contains("second YAML document"), "{err:?}");
        assert!(parse("---\na: 1\n...\n").is_ok());
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_grows() {
        let mut src = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            src += &format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            );
        }
        let err = parse(&src).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{err:?}");
        assert!(src[err.offset..].starts_with('*'));
    }

    #[test]
    fn aliases_resolve() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let Value::Map(pairs) = &root.value else {
            panic!()
        };
        assert!(matches!(&pairs[1].1.value, Value::Seq(v) if v.len() == 2));
    }
}
