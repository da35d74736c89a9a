//! `classifier`: the gateway traffic classifier's daemon and command-line tool.

fn main() -> std::process::ExitCode {
    classifier_user::cli::main()
}
