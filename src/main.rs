fn main() -> std::process::ExitCode {
    order_engine::cli::run()
}
