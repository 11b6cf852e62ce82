fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(colinux_daemon::attach::main(std::env::args_os().collect()))
}
