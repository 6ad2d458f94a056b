//! The `losscape` binary: everything is in the library (`losscape::cli`).

fn main() -> std::process::ExitCode {
    losscape::cli::main()
}
