fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(colinux_daemon::daemon::main(std::env::args_os().collect()))
}
