use std::process::ExitCode;

fn main() -> ExitCode {
    ihub::cli::main()
}
