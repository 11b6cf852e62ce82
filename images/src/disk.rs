//! Opening disk images and reading bytes from them, whatever their container.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::qemu;

/// Random-access reads from a disk's virtual contents.
pub trait ReadAt {
    /// The virtual size of the disk in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`. Reading past [`ReadAt::size`] is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&end| end <= self.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_at(buf, offset)
    }
}

/// The container a disk image is stored in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The bytes of the file are the bytes of the disk.
    Raw,
    /// A format that `qemu-img` reads, by its qemu driver name (qcow2, vmdk…).
    Qemu(&'static str),
}

impl Format {
    /// Recognises container formats by their magic numbers. Anything else is raw:
    /// we never let qemu-img guess, since a raw image can start with anything.
    pub fn detect(head: &[u8]) -> Format {
        let at =
            |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
        if at(0, b"QFI\xfb") {
            Format::Qemu("qcow2")
        } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
            Format::Qemu("vmdk")
        } else if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
            Format::Qemu("vdi")
        } else if at(0, b"vhdxfile") {
            Format::Qemu("vhdx")
        } else if at(0, b"conectix") {
            Format::Qemu("vpc")
        } else if at(0, b"QED\0") {
            Format::Qemu("qed")
        } else {
            Format::Raw
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qemu(driver) => driver,
        }
    }
}

/// A file an image reads from, and how to name it in an error.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub role: String,
}

/// An opened disk image: a raw file read directly, or any other container
/// read through `qemu-img`.
pub struct DiskImage {
    pub path: PathBuf,
    pub file: File,
    pub format: Format,
    size: u64,
    /// Windows already fetched through qemu-img, by window index.
    windows: RefCell<HashMap<u64, Vec<u8>>>,
}

/// Reads through qemu-img go in aligned windows of this size: one qemu-img
/// run fetches the whole of a typical partition table.
const WINDOW: u64 = 1 << 20;

impl DiskImage {
    pub fn open(path: &Path) -> Result<DiskImage> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "open it", e))?;
        if meta.is_dir() {
            return Err(Error::new(path, ErrorKind::Directory));
        }
        let mut file = File::open(path).map_err(|e| Error::io(path, "open it", e))?;
        // Seeking to the end also sizes block devices, whose metadata says 0.
        let file_len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(path, "read it", e))?;
        if file_len == 0 {
            return Err(Error::new(path, ErrorKind::Empty));
        }
        let mut head = vec![0; file_len.min(4096) as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(path, "read it", e))?;
        let format = Format::detect(&head);
        let size = match format {
            Format::Raw => file_len,
            Format::Qemu(driver) => qemu::virtual_size(path, driver)?,
        };
        Ok(DiskImage {
            path: path.to_owned(),
            file,
            format,
            size,
            windows: RefCell::default(),
        })
    }

    /// Every file this image's contents are read from, with what it is to
    /// the image: the image itself, then (through qemu-img) its whole
    /// backing chain. Writing any of them would destroy the input.
    pub fn sources(&self) -> Result<Vec<Source>> {
        let input = Source {
            path: self.path.clone(),
            role: format!("is the input {} (the same file)", self.path.display()),
        };
        let Format::Qemu(driver) = self.format else {
            return Ok(vec![input]);
        };
        let chain = qemu::backing_chain(&self.path, driver)?;
        let backing = chain.windows(2).map(|pair| Source {
            path: pair[1].clone(),
            role: format!(
                "is the backing file of {}, part of the input {}",
                pair[0].display(),
                self.path.display()
            ),
        });
        Ok(std::iter::once(input).chain(backing).collect())
    }

    fn read_window(&self, index: u64) -> io::Result<Vec<u8>> {
        let Format::Qemu(driver) = self.format else {
            unreachable!("raw images are read directly")
        };
        let offset = index * WINDOW;
        let len = WINDOW.min(self.size - offset);
        qemu::read_range(&self.path, driver, offset, len)
            .map_err(|e| io::Error::other(e.kind.to_string()))
    }
}

impl ReadAt for DiskImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if self.format == Format::Raw {
            return self.file.read_exact_at(buf, offset);
        }
        let mut pos = offset;
        while pos < end {
            let index = pos / WINDOW;
            let mut windows = self.windows.borrow_mut();
            let window = match windows.entry(index) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.read_window(index)?),
            };
            let from = (pos - index * WINDOW) as usize;
            let n = (window.len() - from).min((end - pos) as usize);
            let dst = (pos - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&window[from..from + n]);
            pos += n as u64;
        }
        Ok(())
    }
}

impl ReadAt for File {
    fn size(&self) -> u64 {
        // Seeking to the end also sizes block devices, whose metadata says 0.
        // Every read and write here is positioned, so the offset is unused.
        let mut file = self;
        file.seek(SeekFrom::End(0)).unwrap_or(0)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}
