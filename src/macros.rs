//! Printing that never panics. `println!` and `eprintln!` panic when the stream is gone: a
//! closed pipe (`llmdeck gpus --json | head -1`) or a terminal hung up when an SSH session
//! ends. Either way there is nobody left to read the text, so it is dropped.

/// Like `eprintln!`, without the panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Like `println!`, without the panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
