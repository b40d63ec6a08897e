/// mimalloc: about a third less memory per pending order than the system allocator (see
/// BENCHMARKS.md, memory).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    order_engine::cli::run()
}
