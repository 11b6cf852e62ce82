//! Copying a byte range between files so that the destination is sparse:
//! holes in the source are skipped without reading (SEEK_DATA/SEEK_HOLE),
//! and every all-zero block of the destination is left as a hole.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use crate::error::Error;
use crate::output::Output;
use crate::Progress;

/// Which side of a copy failed, so the error names the right file.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    /// The error about `input` (a read) or `out` (a write).
    pub(crate) fn about(self, input: &std::path::Path, out: &Output) -> Error {
        match self {
            CopyError::Read(e) => Error::io(input, "read it", e),
            CopyError::Write(e) => out.error("write it", e),
        }
    }
}

/// The hole granularity of the destination; 4 KiB is the block size of
/// every filesystem a disk image lives on in practice.
pub const BLOCK: u64 = 4096;
/// Bytes read at a time. Large enough to amortise the calls,
/// small enough to keep memory flat whatever the image size.
const CHUNK: u64 = 8 << 20;

/// Where the next data at or after `offset` starts, `None` if only holes remain.
fn seek_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    lseek(file, offset, libc::SEEK_DATA)
}

/// Where the hole after `offset` starts (the file's end counts as a hole).
fn seek_hole(file: &File, offset: u64) -> io::Result<Option<u64>> {
    lseek(file, offset, libc::SEEK_HOLE)
}

fn lseek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// The data extents of `src` within `start..start+len`, relative to `start`.
/// Filesystems without SEEK_DATA (and block devices) report one extent.
fn data_extents(src: &File, start: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < len {
        let data = match seek_data(src, start + pos) {
            Ok(Some(d)) => d - start,
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e),
        };
        if data >= len {
            break;
        }
        let hole = seek_hole(src, start + data)?.map_or(len, |h| (h - start).min(len));
        extents.push((data, hole));
        pos = hole;
    }
    Ok(extents)
}

/// The bytes of data (holes aside) in `src` within `start..start+len`: what
/// a sparse copy of that range writes at most.
pub fn data_bytes(src: &File, start: u64, len: u64) -> io::Result<u64> {
    Ok(data_extents(src, start, len)?
        .iter()
        .map(|(data, hole)| hole - data)
        .sum())
}

fn is_zero(block: &[u8]) -> bool {
    // An OR over whole words, with no early exit, compiles to vector code.
    let (words, rest) = block.split_at(block.len() / 8 * 8);
    words.chunks_exact(8).fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
    }) == 0
        && rest.iter().all(|&b| b == 0)
}

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off`, writing
/// only the destination blocks that hold a non-zero byte. The caller sizes
/// `dst` beforehand, so skipped blocks read back as zeros. Returns the number
/// of bytes actually written.
pub fn sparse_copy(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    progress: &dyn Progress,
) -> Result<u64, CopyError> {
    // Block boundaries are those of the destination, which may sit at a
    // different alignment from the source (a partition at sector 63).
    let down = |p: u64| ((dst_off + p) / BLOCK * BLOCK).saturating_sub(dst_off);
    let up = |p: u64| ((dst_off + p).div_ceil(BLOCK) * BLOCK - dst_off).min(len);

    progress.start(len);
    let mut reader = Reader::new(src);
    let mut written = 0;
    let mut done = 0;
    let extents = data_extents(src, src_off, len).map_err(CopyError::Read)?;
    for (data, hole) in extents {
        let mut pos = down(data).max(done);
        let end = up(hole);
        while pos < end {
            if progress.cancelled() {
                let interrupted = io::Error::new(io::ErrorKind::Interrupted, "interrupted");
                return Err(CopyError::Write(interrupted));
            }
            // Chunks end on a destination block boundary.
            let chunk_end = if end - pos > CHUNK {
                down(pos + CHUNK)
            } else {
                end
            };
            let chunk = reader
                .get(src_off + pos, (chunk_end - pos) as usize)
                .map_err(CopyError::Read)?;
            let first = BLOCK - (dst_off + pos) % BLOCK;
            written += write_nonzero(dst, dst_off + pos, chunk, first).map_err(CopyError::Write)?;
            pos = chunk_end;
            progress.update(pos);
        }
        done = end;
    }
    // Shortened before we got to its end, the source reads as holes there.
    if let Some(e) = shrank(src, src_off + len) {
        return Err(CopyError::Read(e));
    }
    progress.update(len);
    Ok(written)
}

/// FICLONERANGE's argument (`struct file_clone_range`, linux/fs.h).
#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `_IOW(0x94, 13, struct file_clone_range)`.
const FICLONERANGE: u64 = 0x4020_940d;

/// Shares `len` bytes of `src` at `src_off` with `dst` at `dst_off` instead
/// of copying them (a reflink, on XFS and btrfs): the filesystem points the
/// destination at the same extents, O(extents) whatever the size, and
/// copies on a later write. Both offsets must be multiples of `dst`'s block
/// size; a tail shorter than a block is copied. `Ok(false)` when the two
/// files cannot share (another filesystem, one without reflinks, or an
/// alignment it refuses): the caller copies instead. Returns whether it
/// shared.
pub fn share_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    progress: &dyn Progress,
) -> Result<bool, CopyError> {
    use std::os::unix::fs::MetadataExt;
    let block = dst.metadata().map_err(CopyError::Write)?.blksize().max(1);
    let whole = len / block * block;
    if whole == 0 || !src_off.is_multiple_of(block) || !dst_off.is_multiple_of(block) {
        return Ok(false);
    }
    progress.start(len);
    let range = FileCloneRange {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: src_off,
        src_length: whole,
        dest_offset: dst_off,
    };
    // SAFETY: both descriptors are open for the call, and `range` is the
    // struct FICLONERANGE reads, alive until it returns.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONERANGE as _, &range) };
    if r != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOTTY | libc::ENOSYS) => {
                Ok(false)
            }
            _ => Err(CopyError::Write(err)),
        };
    }
    if whole < len {
        let tail = len - whole;
        sparse_copy(
            src,
            src_off + whole,
            dst,
            dst_off + whole,
            tail,
            &crate::NoProgress,
        )?;
    }
    progress.update(len);
    Ok(true)
}

/// Reads the source chunk by chunk into one reused buffer. It is read, not
/// mapped: a mapped file that another program truncates kills the reader
/// with SIGBUS, where a read past the new end is an error we can explain.
struct Reader<'a> {
    src: &'a File,
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn new(src: &'a File) -> Self {
        Reader {
            src,
            buf: Vec::new(),
        }
    }

    fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.buf.resize(len, 0);
        match self.src.read_exact_at(&mut self.buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(shrank(self.src, offset + len as u64).unwrap_or(e))
            }
            result => result.map(|()| self.buf.as_slice()),
        }
    }
}

/// The error for a source file shorter than `end`: it was longer when the
/// copy was planned, so another program shortened it under us. `None` if
/// it is still that long (or is no regular file).
fn shrank(src: &File, end: u64) -> Option<io::Error> {
    let len = src.metadata().ok().filter(|m| m.is_file())?.len();
    (len < end).then(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "it shrank to {len} bytes while being read (another program truncated or rewrote it)"
            ),
        )
    })
}

/// Writes the runs of non-zero blocks of `chunk` (destination offset `at`;
/// its first block is `first` bytes long, the rest [`BLOCK`]).
fn write_nonzero(dst: &File, at: u64, chunk: &[u8], first: u64) -> io::Result<u64> {
    let mut written = 0;
    let mut run_start: Option<usize> = None;
    let mut pos = 0usize;
    let mut block_len = first.min(chunk.len() as u64) as usize;
    while pos < chunk.len() {
        let block = &chunk[pos..pos + block_len];
        match (is_zero(block), run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                dst.write_all_at(&chunk[s..pos], at + s as u64)?;
                written += (pos - s) as u64;
                run_start = None;
            }
            _ => {}
        }
        pos += block_len;
        block_len = (BLOCK as usize).min(chunk.len() - pos);
    }
    if let Some(s) = run_start {
        dst.write_all_at(&chunk[s..], at + s as u64)?;
        written += (chunk.len() - s) as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;
    use std::io::Write;

    fn allocated_bytes(f: &File) -> u64 {
        use std::os::unix::fs::MetadataExt;
        f.metadata().unwrap().blocks() * 512
    }

    /// A source with data, zeros written as data, and a real hole.
    fn source() -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut content = vec![0u8; 3 << 20];
        for (i, b) in content[..100_000].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        content[(2 << 20) + 5] = 9;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&content[..1 << 20]).unwrap(); // data, then explicit zeros
        f.as_file().set_len(3 << 20).unwrap(); // a hole from 1 MiB
        f.as_file()
            .write_all_at(&content[(2 << 20)..(2 << 20) + 4096], 2 << 20)
            .unwrap();
        (f, content)
    }

    #[test]
    fn copies_exact_bytes_at_any_alignment() {
        let (src, content) = source();
        for (src_off, dst_off, len) in [
            (0, 0, 3 << 20),
            (32256, 0, 2_000_000),
            (0, 32256, 3 << 20),
            (513, 1 << 20, 2_500_000),
        ] {
            let dst = tempfile::tempfile().unwrap();
            dst.set_len(dst_off + len).unwrap();
            sparse_copy(src.as_file(), src_off, &dst, dst_off, len, &NoProgress).unwrap();
            let mut got = vec![0u8; len as usize];
            dst.read_exact_at(&mut got, dst_off).unwrap();
            let want_end = (src_off + len) as usize;
            let mut want = content[src_off as usize..want_end.min(content.len())].to_vec();
            want.resize(len as usize, 0);
            assert!(
                got == want,
                "mismatch for src_off={src_off} dst_off={dst_off} len={len}"
            );
        }
    }

    #[test]
    fn zero_blocks_become_holes() {
        let (src, _) = source();
        let dst = tempfile::tempfile().unwrap();
        dst.set_len(3 << 20).unwrap();
        let written = sparse_copy(src.as_file(), 0, &dst, 0, 3 << 20, &NoProgress).unwrap();
        // 100_000 bytes of data round up to 25 blocks, plus the one at 2 MiB.
        assert_eq!(written, 26 * BLOCK);
        assert!(
            allocated_bytes(&dst) <= 32 * BLOCK,
            "{}",
            allocated_bytes(&dst)
        );
    }

    /// Shortens the source to `to` bytes once the copy is under way, as
    /// another program might.
    struct Truncates<'a> {
        source: &'a std::path::Path,
        to: u64,
    }
    impl Progress for Truncates<'_> {
        fn update(&self, done: u64) {
            if done > 0 {
                let other = std::fs::OpenOptions::new().write(true).open(self.source);
                other.unwrap().set_len(self.to).unwrap();
            }
        }
    }

    #[test]
    fn a_source_truncated_during_the_copy_is_an_error_not_a_crash() {
        // Data (no holes) over three chunks: the copy reads past the new end.
        let mut src = tempfile::NamedTempFile::new().unwrap();
        src.write_all(&vec![7u8; 3 * CHUNK as usize]).unwrap();
        let dst = tempfile::tempfile().unwrap();
        dst.set_len(3 * CHUNK).unwrap();
        let truncates = Truncates {
            source: src.path(),
            to: CHUNK + 100,
        };
        let err = sparse_copy(src.as_file(), 0, &dst, 0, 3 * CHUNK, &truncates).unwrap_err();
        let CopyError::Read(e) = err else {
            panic!("blamed the destination: {err:?}")
        };
        assert_eq!(
            e.to_string(),
            format!(
                "it shrank to {} bytes while being read (another program truncated or rewrote it)",
                CHUNK + 100
            )
        );
    }

    #[test]
    fn a_source_truncated_into_its_holes_is_an_error_too() {
        // Only holes past 1 MiB: nothing is read there, the end check finds it.
        let (src, _) = source();
        let dst = tempfile::tempfile().unwrap();
        dst.set_len(3 << 20).unwrap();
        let truncates = Truncates {
            source: src.path(),
            to: 2 << 20,
        };
        let err = sparse_copy(src.as_file(), 0, &dst, 0, 3 << 20, &truncates).unwrap_err();
        assert!(
            matches!(&err, CopyError::Read(e) if e.to_string().starts_with("it shrank to 2097152 bytes")),
            "{err:?}"
        );
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 4096]));
        assert!(is_zero(&[0; 13]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[0] = 1;
        assert!(!is_zero(&b[..13]));
    }
}
