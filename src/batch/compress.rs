//! Compressed job files: `.gz` and `.zst` inputs read as streams, outputs written as
//! independent gzip members / zstd frames.
//!
//! An output is written one member (or frame) per flush of whole lines, so every flush leaves
//! a file that `zcat`/`zstdcat` read whole, and a `kill -9` can tear at most the last member.
//! Resume finds the end of the last complete member ([`valid_len`]) and cuts the rest, as a
//! torn plain line is cut; both formats concatenate, so appending after it is valid.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a job file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the path's last extension (`.gz`, `.zst`), which is what an output is written as.
    pub fn from_path(path: &Path) -> Compression {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gz" | "gzip") => Compression::Gzip,
            Some("zst" | "zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// From a file's first bytes (the magic numbers), which is what an input is read as:
    /// a compressed file without the extension (or stdin) is still recognised.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The extension this compression adds (`.gz`), empty for none.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// `path` without a compression extension (`jobs.jsonl.gz` -> `jobs.jsonl`), for format
/// detection by extension.
pub fn strip_ext(path: &Path) -> PathBuf {
    match Compression::from_path(path) {
        Compression::None => path.to_path_buf(),
        _ => path.with_extension(""),
    }
}

/// The errors file beside output `path`: `<output>.errors.jsonl`, compressed as the output
/// is (`out.jsonl.gz` -> `out.jsonl.errors.jsonl.gz`).
pub fn errors_path_for(path: &Path) -> PathBuf {
    let c = Compression::from_path(path);
    let mut s = strip_ext(path).into_os_string();
    s.push(".errors.jsonl");
    s.push(c.suffix());
    PathBuf::from(s)
}

/// A source that decompresses `src` when its first bytes say it is compressed (several
/// members or frames read as one stream). Errors of the compressed data name the format.
pub fn decoding(mut src: Box<dyn BufRead + Send>) -> io::Result<(Box<dyn BufRead + Send>, Compression)> {
    let c = Compression::sniff(src.fill_buf()?);
    let out: Box<dyn BufRead + Send> = match c {
        Compression::None => return Ok((src, c)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            256 * 1024,
            Named(c, flate2::bufread::MultiGzDecoder::new(src)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            256 * 1024,
            Named(c, zstd::stream::read::Decoder::with_buffer(src)?),
        )),
    };
    Ok((out, c))
}

/// Opens `path` for reading, decompressed as its first bytes say.
pub fn open_read(path: &Path) -> io::Result<(Box<dyn BufRead + Send>, Compression)> {
    let file = File::open(path)?;
    decoding(Box::new(BufReader::with_capacity(256 * 1024, file)))
}

/// Maps a decoder's errors to a message that says what was being decompressed: "unexpected
/// end of file" alone does not tell a user that their `.gz` is truncated.
struct Named<R>(Compression, R);

impl<R: Read> Read for Named<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1.read(buf).map_err(|e| {
            let what = if e.kind() == io::ErrorKind::UnexpectedEof {
                "truncated"
            } else {
                "corrupt"
            };
            io::Error::new(e.kind(), format!("{what} {} data: {e}", self.0.name()))
        })
    }
}

/// Appends `data` to `out` as one complete gzip member or zstd frame (as is for none).
pub fn encode(c: Compression, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    match c {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            e.write_all(data)?;
            e.finish()?;
        }
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(out, 3)?;
            e.write_all(data)?;
            e.finish()?;
        }
    }
    Ok(())
}

/// Writes whole lines in one `write_all`: as they are, or as one compressed member.
pub fn write_packed(file: &mut impl Write, c: Compression, lines: &[u8], packed: &mut Vec<u8>) -> io::Result<()> {
    if c == Compression::None {
        return file.write_all(lines);
    }
    packed.clear();
    encode(c, lines, packed)?;
    file.write_all(packed)
}

/// Counts the bytes a decoder consumes, to find where each member ends.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
        self.inner.consume(amt);
    }
}

/// The length of the longest prefix of a compressed file made of complete members (gzip) or
/// frames (zstd) that decode without error: what survives a kill mid-write. Reads the file
/// once, member by member, keeping none of it.
pub fn valid_len(path: &Path, c: Compression) -> io::Result<u64> {
    let file = File::open(path)?;
    let mut src = Counting {
        inner: BufReader::with_capacity(256 * 1024, file),
        pos: 0,
    };
    let mut good = 0u64;
    let mut sink = io::sink();
    loop {
        if src.fill_buf()?.is_empty() {
            return Ok(good);
        }
        let ok = match c {
            Compression::None => return Ok(good),
            Compression::Gzip => io::copy(&mut flate2::bufread::GzDecoder::new(&mut src), &mut sink).is_ok(),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(&mut src) {
                Ok(d) => io::copy(&mut d.single_frame(), &mut sink).is_ok(),
                Err(_) => false,
            },
        };
        if !ok || src.pos == good {
            return Ok(good);
        }
        good = src.pos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(c: Compression, parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            encode(c, p.as_bytes(), &mut out).unwrap();
        }
        out
    }

    fn decode_all(bytes: Vec<u8>) -> io::Result<String> {
        let (mut r, _) = decoding(Box::new(io::Cursor::new(bytes)))?;
        let mut s = String::new();
        r.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn members_concatenate_into_one_stream() -> io::Result<()> {
        for c in [Compression::Gzip, Compression::Zstd] {
            let bytes = members(c, &["a\n", "b\nc\n", "d\n"]);
            assert_eq!(Compression::sniff(&bytes), c);
            assert_eq!(decode_all(bytes)?, "a\nb\nc\nd\n", "{c:?}");
        }
        assert_eq!(decode_all(b"plain\n".to_vec())?, "plain\n");
        Ok(())
    }

    #[test]
    fn valid_len_stops_at_the_last_whole_member() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for c in [Compression::Gzip, Compression::Zstd] {
            let whole = members(c, &["one\n", "two\nthree\n"]);
            let path = dir.path().join("out");
            std::fs::write(&path, &whole)?;
            assert_eq!(valid_len(&path, c)?, whole.len() as u64, "{c:?}");
            // Every cut inside a third member ends the valid prefix where it began.
            let third = members(c, &["four\n"]);
            for cut in 0..third.len() {
                let mut torn = whole.clone();
                torn.extend_from_slice(&third[..cut]);
                std::fs::write(&path, &torn)?;
                assert_eq!(valid_len(&path, c)?, whole.len() as u64, "{c:?} cut {cut}");
            }
        }
        Ok(())
    }

    #[test]
    fn truncated_input_is_named_as_such() {
        let mut bytes = members(Compression::Gzip, &["a line that is long enough to be cut\n"]);
        bytes.truncate(bytes.len() - 6);
        let err = decode_all(bytes).unwrap_err();
        assert!(err.to_string().contains("gzip data"), "{err}");
    }

    #[test]
    fn paths() {
        assert_eq!(strip_ext(Path::new("a/jobs.jsonl.gz")), Path::new("a/jobs.jsonl"));
        assert_eq!(strip_ext(Path::new("jobs.jsonl")), Path::new("jobs.jsonl"));
        assert_eq!(errors_path_for(Path::new("o.jsonl")), Path::new("o.jsonl.errors.jsonl"));
        assert_eq!(
            errors_path_for(Path::new("o.jsonl.zst")),
            Path::new("o.jsonl.errors.jsonl.zst")
        );
    }
}
