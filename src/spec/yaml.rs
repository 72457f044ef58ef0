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

/// Parses one YAML document. An empty document is `Value::Null`.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let offsets = Offsets::new(source);
    let mut builder = Builder {
        source,
        offsets: &offsets,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        error: None,
    };
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, false) {
        return Err(SyntaxError {
            offset: offsets.byte(e.marker()),
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
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
}

impl Offsets {
    fn new(source: &str) -> Self {
        let table = (!source.is_ascii()).then(|| source.char_indices().map(|(b, _)| b).collect());
        Offsets {
            table,
            len: source.len(),
        }
    }
    fn byte(&self, mark: &Marker) -> usize {
        match &self.table {
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
    },
    Map {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
}

struct Builder<'s> {
    source: &'s str,
    offsets: &'s Offsets,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder<'_> {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
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
                self.push(
                    Node {
                        value,
                        span: Span::new(at, end),
                    },
                    anchor,
                );
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    node.span = Span::new(at, at + 1);
                    self.push(node, 0);
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
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Open::Map {
                start: at,
                anchor,
                items: Vec::new(),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else { return };
                let (node, anchor) = match open {
                    Open::Seq {
                        start,
                        anchor,
                        items,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            span: Span::new(start, at),
                        },
                        anchor,
                    ),
                    Open::Map {
                        start,
                        anchor,
                        items,
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
                        )
                    }
                };
                self.push(node, anchor);
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
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
    fn aliases_resolve() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let Value::Map(pairs) = &root.value else {
            panic!()
        };
        assert!(matches!(&pairs[1].1.value, Value::Seq(v) if v.len() == 2));
    }
}
