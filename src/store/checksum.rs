//! How a transfer is verified: against a checksum recorded where the data came from.
//!
//! Blobs `stage` writes carry the CRC-64/NVME of their content in metadata
//! ([`CRC64_KEY`]), computed from the very buffers sent. A download verifies against that
//! when present: it runs at memory speed, where MD5 (one core at ~560 MB/s here) was the
//! bound on two cores shared with the service. Blobs written by other tools are verified
//! against their Content-MD5 when they have one, and by length alone otherwise — as AMLFS's
//! own archive leaves them.
//!
//! CRC64 catches transmission and storage corruption, which is what verification is for;
//! neither it nor MD5 would stop someone forging content.

use std::io::Read;
use std::path::Path;

use crc_fast::CrcAlgorithm::Crc64Nvme;
use md5::{Digest as _, Md5};

/// Blob metadata key holding the content's CRC-64/NVME as 16 hex digits.
pub const CRC64_KEY: &str = "stage_crc64";

/// A checksum of a whole file or blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sum {
    Crc64(u64),
    Md5([u8; 16]),
}

impl Sum {
    pub fn parse_crc64(v: &str) -> Option<Sum> {
        let v = v.trim();
        (v.len() == 16)
            .then(|| u64::from_str_radix(v, 16).ok())
            .flatten()
            .map(Sum::Crc64)
    }

    pub fn crc64_hex(crc: u64) -> String {
        format!("{crc:016x}")
    }

    fn name(&self) -> &'static str {
        match self {
            Sum::Crc64(_) => "CRC64",
            Sum::Md5(_) => "MD5",
        }
    }
}

/// Computes the kind of sum `want` is (or nothing, when there is nothing to check against).
pub enum Hasher {
    Crc64(Box<crc_fast::Digest>),
    Md5(Box<Md5>),
    Nothing,
}

impl Hasher {
    pub fn like(want: Option<Sum>) -> Hasher {
        match want {
            Some(Sum::Crc64(_)) => Hasher::crc64(),
            Some(Sum::Md5(_)) => Hasher::Md5(Box::default()),
            None => Hasher::Nothing,
        }
    }

    pub fn crc64() -> Hasher {
        Hasher::Crc64(Box::new(crc_fast::Digest::new(Crc64Nvme)))
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc64(d) => d.update(data),
            Hasher::Md5(d) => d.update(data),
            Hasher::Nothing => {}
        }
    }

    /// Appends what `other` hashed, as if its bytes had followed ours (CRC only: ranges
    /// of a large blob are hashed where they land, in parallel, then joined).
    pub fn append(&mut self, other: &Hasher) -> bool {
        match (self, other) {
            (Hasher::Crc64(a), Hasher::Crc64(b)) => {
                a.combine(b);
                true
            }
            (Hasher::Nothing, Hasher::Nothing) => true,
            _ => false,
        }
    }

    pub fn finish(self) -> Option<Sum> {
        match self {
            Hasher::Crc64(d) => Some(Sum::Crc64(d.finalize())),
            Hasher::Md5(d) => Some(Sum::Md5(d.finalize().into())),
            Hasher::Nothing => None,
        }
    }
}

/// Reads `path` and returns its length and the sum of the kind `want` is.
pub fn file(path: &Path, want: Option<Sum>) -> std::io::Result<(u64, Option<Sum>)> {
    read(std::fs::File::open(path)?, want)
}

/// [`file`] for a file already open (found without following links).
pub fn read(mut f: impl Read, want: Option<Sum>) -> std::io::Result<(u64, Option<Sum>)> {
    let mut hasher = Hasher::like(want);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hasher.finish()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Checks what was read against what the source recorded; the message names the check.
pub fn verify(size: u64, want: Option<Sum>, n: u64, got: Option<Sum>) -> Result<(), String> {
    if n != size {
        return Err(format!(
            "blob changed while copying: listed {size} bytes, read {n}"
        ));
    }
    match (want, got) {
        (Some(w), Some(g)) if w == g => Ok(()),
        (Some(w @ Sum::Crc64(_)), _) => Err(format!(
            "{} of the data read does not match the one recorded with the blob ({CRC64_KEY}): \
             the blob is damaged, or a tool rewrote it and kept stage's metadata",
            w.name()
        )),
        (Some(w), _) => Err(format!(
            "{} of the data read does not match the blob's Content-MD5: the blob is damaged, \
             or its Content-MD5 was set by hand",
            w.name()
        )),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_is_the_nvme_polynomial_and_joins_ranges() {
        // The CRC-64/NVME check value (the catalogue's "123456789" vector).
        let mut h = Hasher::crc64();
        h.update(b"123456789");
        assert_eq!(h.finish(), Some(Sum::Crc64(0xae8b_1486_0a79_9888)));

        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Hasher::crc64();
        whole.update(&data);
        let mut joined = Hasher::crc64();
        for part in data.chunks(30_011) {
            let mut h = Hasher::crc64();
            h.update(part);
            assert!(joined.append(&h));
        }
        assert_eq!(joined.finish(), whole.finish());
    }

    #[test]
    fn metadata_value_round_trips_and_junk_is_ignored() {
        let s = Sum::crc64_hex(0x0123_4567_89ab_cdef);
        assert_eq!(s, "0123456789abcdef");
        assert_eq!(
            Sum::parse_crc64(&s),
            Some(Sum::Crc64(0x0123_4567_89ab_cdef))
        );
        assert_eq!(Sum::parse_crc64("12345"), None);
        assert_eq!(Sum::parse_crc64("zz23456789abcdef"), None);
    }

    #[test]
    fn verification_names_the_failed_check() {
        let want = Some(Sum::Crc64(1));
        assert!(verify(3, want, 3, Some(Sum::Crc64(1))).is_ok());
        assert!(
            verify(3, want, 2, Some(Sum::Crc64(1)))
                .unwrap_err()
                .contains("listed 3")
        );
        assert!(
            verify(3, want, 3, Some(Sum::Crc64(2)))
                .unwrap_err()
                .contains("CRC64")
        );
        assert!(verify(3, None, 3, None).is_ok());
    }
}
