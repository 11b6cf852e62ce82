//! `cargo xtask convert`: QEMU disk image ⇄ cobd filesystem image.

use std::path::PathBuf;

use anyhow::Result;
use images::table::human;
use images::todisk::{DiskFormat, Layout};

use crate::progress::Reporter;

/// Turn a QEMU disk image (raw, qcow2, vmdk, vdi, vhdx…) into the bare
/// filesystem image that cobd wants, by extracting one partition; or, with
/// --to-disk, wrap a filesystem image into a partitioned disk.
///
/// A file output is sparse, written to a temporary file and renamed into
/// place when complete; an existing file is never replaced without --force.
/// A symbolic link is followed: its target is written (replaced as above)
/// and the link stays. A block device is written in place, from its first
/// byte, only with --overwrite-device; the rest of it is left as it was.
/// Any other output (character device, FIFO, directory) is refused, and so
/// is the input itself or any file it reads from (a qcow2 backing file),
/// whatever the flags.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cargo xtask convert --list debian.qcow2\n  cargo xtask convert debian.qcow2 root_fs.ext4\n  cargo xtask convert --partition 5 disk.img root_fs.ext4\n  cargo xtask convert --overwrite-device debian.qcow2 /dev/sdb1\n  cargo xtask convert --to-disk --gpt root_fs.ext4 disk.qcow2"
)]
pub struct Args {
    /// The disk image to read (with --to-disk: the filesystem image).
    input: PathBuf,
    /// Where to write the result. Not needed with --list.
    #[arg(required_unless_present = "list")]
    output: Option<PathBuf>,
    /// Print the partition table of INPUT, with the filesystem found in each partition, and exit.
    #[arg(long, conflicts_with_all = ["to_disk", "output"])]
    list: bool,
    /// The partition to extract, numbered as Linux does (1–4 primary, 5+ logical; GPT entry index).
    /// Default: the only partition that holds a Linux filesystem.
    #[arg(short, long, value_name = "N")]
    partition: Option<u32>,
    /// Replace OUTPUT if it is an existing regular file (or a link to one).
    #[arg(short, long)]
    force: bool,
    /// Write onto OUTPUT if it is a block device (a host partition or disk):
    /// in place, from its first byte, after checking that the image fits.
    #[arg(long)]
    overwrite_device: bool,
    /// The reverse: wrap the filesystem image INPUT into a one-partition disk image.
    /// Default layout: MBR, partition at sector 2048.
    #[arg(long, conflicts_with = "partition")]
    to_disk: bool,
    /// With --to-disk: a GPT instead of an MBR (partition at 1 MiB).
    #[arg(long, requires = "to_disk", conflicts_with = "legacy_63")]
    gpt: bool,
    /// With --to-disk --gpt: the logical sector size.
    #[arg(long, requires = "gpt", value_name = "BYTES", default_value_t = 512, value_parser = sector_size)]
    sector_size: u64,
    /// With --to-disk: put the partition at sector 63, as disks partitioned before 2009 had it.
    #[arg(long, requires = "to_disk")]
    legacy_63: bool,
    /// With --to-disk: the output container. Default: qcow2 if OUTPUT ends in .qcow2, else raw.
    #[arg(long, requires = "to_disk", value_enum)]
    format: Option<Format>,
}

impl Args {
    fn overwrite(&self) -> images::Overwrite {
        images::Overwrite {
            file: self.force,
            device: self.overwrite_device,
        }
    }
}

fn sector_size(text: &str) -> Result<u64, String> {
    match text {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err("a GPT sector is 512 or 4096 bytes".into()),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Raw,
    Qcow2,
}

pub fn run(args: Args) -> Result<()> {
    crate::progress::catch_interrupts();
    if args.list {
        let disk = images::DiskImage::open(&args.input)?;
        let table = images::table::read(&disk).map_err(|k| images::Error::new(&args.input, k))?;
        for w in &table.warnings {
            tracing::warn!("{}: {w}", args.input.display());
        }
        println!("{}: {} image", args.input.display(), disk.format.name());
        print!("{}", table.render());
        return Ok(());
    }
    let output = args
        .output
        .clone()
        .expect("clap requires OUTPUT without --list");
    if args.to_disk {
        return to_disk(&args.input, &output, &args);
    }
    let plan = images::Plan::new(&args.input, args.partition)?;
    let part = &plan.partition;
    match part.number {
        0 => tracing::info!(
            "{}: no partition table; it is already a bare filesystem, copying it whole",
            args.input.display()
        ),
        n => tracing::info!(
            "{}: partition {n} at byte {} ({}), {}",
            args.input.display(),
            part.start,
            human(part.size),
            part.fs
                .as_ref()
                .map_or("no filesystem found".into(), |f| f.kind.to_string())
        ),
    }
    let done = images::convert(&plan, &output, args.overwrite(), &Reporter::new("convert"))?;
    for w in &done.warnings {
        tracing::warn!("{w}");
    }
    let fs = done
        .fs
        .map_or("unknown content".into(), |f| f.kind.to_string());
    let how = if done.shared {
        " (sharing the input's extents: a reflink, no data copied)"
    } else {
        ""
    };
    tracing::info!("wrote {}: {fs}, {} bytes{how}", output.display(), done.size);
    Ok(())
}

fn to_disk(input: &std::path::Path, output: &std::path::Path, args: &Args) -> Result<()> {
    let layout = if args.gpt {
        Layout::Gpt {
            sector_size: args.sector_size,
        }
    } else {
        Layout::Mbr {
            start_sector: if args.legacy_63 { 63 } else { 2048 },
        }
    };
    let format = match args.format {
        Some(Format::Qcow2) => DiskFormat::Qcow2,
        Some(Format::Raw) => DiskFormat::Raw,
        None if output.extension().is_some_and(|e| e == "qcow2") => DiskFormat::Qcow2,
        None => DiskFormat::Raw,
    };
    let done = images::todisk::to_disk(
        input,
        output,
        layout,
        format,
        args.overwrite(),
        &Reporter::new("to-disk"),
    )?;
    tracing::info!(
        "wrote {}: {} disk of {}, partition 1 at byte {} holding {}",
        output.display(),
        match format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        },
        human(done.disk_size),
        done.partition_start,
        done.fs.map_or("unknown content".into(), |f| f.to_string())
    );
    Ok(())
}
