//! Benchmarks and comparisons of the forkswitch SIP codec against other Rust SIP parsers.
