//! A deterministic stand-in for the fuzzers (which CI does not run): feed
//! thousands of mutated and random inputs to both parsers and check they
//! answer with a one-line error or consistent settings, never a panic.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use colinux_config::{parse_ini_str, Error, Parser, Settings, MAX_COBD, MAX_KERNEL_CMDLINE};

const CONFIG_SEED: &str = include_str!("data/colinux.conf");
const NETWORK_SEED: &str = include_str!("data/network.conf");
const INI_SEED: &str = include_str!("data/node.ini");

/// Pieces that matter to the grammars, spliced in by the mutator.
const DICTIONARY: &[&str] = &[
    "\"",
    "#",
    "=",
    ",",
    ":",
    "/",
    "@",
    "\n",
    "\r\n",
    " ",
    ";",
    "[",
    "]",
    "x",
    "0",
    "9",
    "-",
    "\u{feff}",
    "é",
    "kernel=",
    "mem=",
    "smp=",
    "arch=",
    "accel=",
    "qemu=",
    "cocon=",
    "cobd0=",
    "cobd31=",
    "cobd32=",
    "hda1=",
    "hda1=:cobd0",
    "sdz15=",
    "eth0=",
    "eth15=slirp,,",
    "tcp:1:2:3/",
    "udp:65535:1",
    "tuntap,\"",
    "pcap-bridge,",
    "ndis-bridge,",
    ",nopromisc",
    "02:00:00:00:00:01",
    "01-",
    "cofs0=",
    "ttys0=",
    ",\"BAUD=",
    " PARITY=",
    " DATA=",
    " STOP=",
    " dtr=hs rts=tg xon=on to=off",
    "COM1",
    "exec7=",
    "scsi0=disk,",
    "scsi31=cdrom,",
    ",1024,grow",
    "color=yellow,black",
    "cursor=",
    "setcobd=async",
    "pci3=",
    "video1=",
    "cobd1x=",
    "ethX=",
    "ETH0=",
    "@a.conf",
    "@b.conf",
    "@node.ini",
    "@sub/../a.conf",
    "@missing.conf",
    "[comosix]",
    "[NFS]",
    "[cobd]",
    "memory_size=",
    "server=",
    "path=",
    "options=",
    "path_0=",
    "path_9=",
    "root=/dev/cobd0",
    "x86_64",
    "99999999999999999999",
];

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A few random edits of `seed`, on characters so the text stays UTF-8.
fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(8) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => {
                let piece = rng.pick(DICTIONARY);
                chars.splice(at..at, piece.chars());
            }
            2 if at < chars.len() => {
                let piece: Vec<char> = rng.pick(DICTIONARY).chars().collect();
                chars[at] = piece[0];
            }
            3 if !chars.is_empty() => {
                // Duplicate a slice: repeats keys (duplicates, last-wins).
                let start = rng.below(chars.len());
                let end = (start + rng.below(80)).min(chars.len());
                let slice: Vec<char> = chars[start..end].to_vec();
                chars.splice(at..at, slice);
            }
            _ => {
                let byte = (rng.next() & 0x7f) as u8;
                chars.insert(at, char::from(byte));
            }
        }
    }
    chars.into_iter().collect()
}

/// Tokens from the dictionary, glued at random.
fn random_text(rng: &mut Rng) -> String {
    (0..rng.below(40)).map(|_| rng.pick(DICTIONARY)).collect()
}

/// What every outcome must satisfy.
fn check(outcome: Result<Settings, Error>, input: &str) {
    match outcome {
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "empty message for {input:?}");
            assert!(
                !message.contains(char::is_control),
                "not one clean line: {message:?} for {input:?}"
            );
        }
        Ok(settings) => {
            assert!(
                settings.kernel_cmdline(&[]).is_ok(),
                "over-long command line accepted for {input:?}"
            );
            assert!(settings.kernel_args.join(" ").len() <= MAX_KERNEL_CMDLINE);
            assert!(settings.cobd.keys().all(|&i| i <= MAX_COBD));
            for alias in settings.aliases.values() {
                assert!(
                    settings.cobd.contains_key(&alias.cobd),
                    "dangling alias for {input:?}"
                );
            }
            let _ = settings.describe(Some(4096));
            let _ = settings.check_files().map_err(|e| e.to_string());
        }
    }
}

/// An in-memory filesystem whose files are mutated too, so includes,
/// cycles and ini includes get exercised without touching the disk.
fn in_memory(files: HashMap<&'static str, Vec<u8>>) -> impl FnMut(&Path) -> io::Result<Vec<u8>> {
    move |path: &Path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        files
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in the test filesystem"))
    }
}

fn files(rng: &mut Rng) -> HashMap<&'static str, Vec<u8>> {
    let mut files = HashMap::new();
    files.insert("a.conf", mutate(rng, NETWORK_SEED).into_bytes());
    files.insert("b.conf", random_text(rng).into_bytes());
    files.insert("node.ini", mutate(rng, INI_SEED).into_bytes());
    // Sometimes bytes that are not UTF-8.
    let mut raw = mutate(rng, "mem=64\nro\n").into_bytes();
    let at = rng.below(raw.len() + 1);
    raw.insert(at, 0xff);
    files.insert("network.conf", raw);
    files
}

#[test]
fn mutated_configs_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let text = if round % 4 == 3 {
            random_text(&mut rng)
        } else {
            mutate(&mut rng, CONFIG_SEED)
        };
        let mut parser = Parser::with_reader("/fuzz", in_memory(files(&mut rng)));
        let outcome = parser
            .config_text(&text, Path::new("/fuzz/colinux.conf"))
            .and_then(|()| parser.finish());
        check(outcome, &text);
    }
}

#[test]
fn mutated_ini_files_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..3000 {
        let text = if round % 4 == 3 {
            random_text(&mut rng)
        } else {
            mutate(&mut rng, INI_SEED)
        };
        check(parse_ini_str(&text, Path::new("/fuzz/node.ini")), &text);
    }
}

#[test]
fn random_command_lines_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..2000 {
        let args: Vec<String> = (0..rng.below(12))
            .map(|_| {
                if rng.below(2) == 0 {
                    rng.pick(DICTIONARY).to_string() + &random_text(&mut rng)
                } else {
                    mutate(&mut rng, "eth0=slirp,02:00:00:00:00:01,tcp:22:22")
                }
            })
            .collect();
        let mut parser = Parser::with_reader("/fuzz", in_memory(files(&mut rng)));
        let outcome = args
            .iter()
            .try_for_each(|arg| parser.arg(arg))
            .and_then(|()| parser.finish());
        check(outcome, &args.join(" | "));
    }
}

#[test]
fn the_seeds_themselves_parse() {
    // Otherwise the mutations would only ever explore error paths.
    let mut rng = Rng(1);
    let mut files = files(&mut rng);
    files.insert("network.conf", NETWORK_SEED.as_bytes().to_vec());
    files.insert("node.ini", INI_SEED.as_bytes().to_vec());
    let mut parser = Parser::with_reader("/fuzz", in_memory(files));
    parser
        .config_text(CONFIG_SEED, Path::new("/fuzz/colinux.conf"))
        .expect("seed parses");
    parser.finish().expect("seed finishes");
    parse_ini_str(INI_SEED, Path::new("/fuzz/node.ini")).expect("ini seed parses");
}
