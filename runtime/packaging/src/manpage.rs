//! Man pages for colinux-daemon(1) and colinux-console(1), rendered from
//! the programs' own clap definitions, so they never disagree with `--help`.

/// The man pages as `(file name, gzip-compressed roff)`:
/// `colinux-daemon.1.gz`, `colinux-console.1.gz`. `date` is the pages'
/// date (`YYYY-MM-DD`, from `SOURCE_DATE_EPOCH` for reproducible pages).
pub fn pages(date: &str) -> Vec<(String, Vec<u8>)> {
    [
        colinux_daemon::daemon::command(),
        colinux_daemon::attach::command(),
    ]
    .into_iter()
    .map(|cmd| {
        let name = format!("{}.1.gz", cmd.get_name());
        (name, crate::tarball::gzip(&render(cmd, date)))
    })
    .collect()
}

/// One page as roff text.
pub fn render(cmd: clap::Command, date: &str) -> Vec<u8> {
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut roff = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd)
        .date(date)
        .source(format!("coLinux {version}"))
        .manual("coLinux")
        .render(&mut roff);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pages_document_every_visible_flag_and_the_exit_codes() {
        let pages = pages("2026-01-02");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["colinux-daemon.1.gz", "colinux-console.1.gz"]);
        let daemon =
            String::from_utf8(render(colinux_daemon::daemon::command(), "2026-01-02")).unwrap();
        assert!(
            daemon.contains(&format!(
                "\n.TH colinux-daemon 1 2026-01-02 \"coLinux {}\" coLinux\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{daemon}"
        );
        for flag in [
            "install\\-service",
            "shutdown\\-timeout",
            "dry\\-run",
            "Exit codes",
        ] {
            assert!(daemon.contains(flag), "{flag} missing:\n{daemon}");
        }
        // Hidden flags (the service manager's) stay out of the page.
        assert!(!daemon.contains("run\\-service"), "{daemon}");
    }
}
