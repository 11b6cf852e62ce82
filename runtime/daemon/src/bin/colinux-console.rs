fn main() -> std::process::ExitCode {
    colinux_daemon::closed_pipe::quiet_on_closed_pipe();
    std::process::ExitCode::from(colinux_daemon::attach::main(std::env::args_os().collect()))
}
