//! Standard output and standard error of the `sluice` command, as `ls | head` treats them: a
//! write that fails (a closed pipe, above all) is the end of that stream's output, never a panic
//! and never a change of the exit status.
//!
//! - Rust ignores SIGPIPE, so a write to a closed pipe returns `EPIPE` and `println!` would panic
//!   (exit 101). Everything the command prints goes through [`out`] and [`err`] instead.
//! - The log (tracing, on standard error) writes through [`LogWriter`], which swallows errors the
//!   same way; the subscriber's own error report (an `eprintln!`) is turned off.
//! - After a stream's first failed write, nothing more is written to it.
//! - The print sink handles standard output itself (`sinks::print`): same rule, per sink.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` and a newline to standard output, unless it is closed.
pub(crate) fn out(args: fmt::Arguments<'_>) {
    let stdout = io::stdout();
    write_line(&mut stdout.lock(), &STDOUT_CLOSED, args);
}

/// Writes `args` and a newline to standard error, unless it is closed.
pub(crate) fn err(args: fmt::Arguments<'_>) {
    let stderr = io::stderr();
    write_line(&mut stderr.lock(), &STDERR_CLOSED, args);
}

/// One line to `stream`; a failed write marks it `closed`.
fn write_line(stream: &mut dyn Write, closed: &AtomicBool, args: fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if stream.write_fmt(args).and_then(|()| stream.write_all(b"\n")).and_then(|()| stream.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// The log's writer: standard error, a failed write ending the log's output (reported to the
/// subscriber as written, so it reports nothing either).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !STDERR_CLOSED.load(Ordering::Relaxed) && io::stderr().write_all(buf).is_err() {
            STDERR_CLOSED.store(true, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose reader has gone.
    struct Closed(usize);

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0 += 1;
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stream_is_written_once_then_left_alone() {
        let closed = AtomicBool::new(false);
        let mut stream = Closed(0);
        write_line(&mut stream, &closed, format_args!("one"));
        write_line(&mut stream, &closed, format_args!("two"));
        assert!(closed.load(Ordering::Relaxed));
        assert_eq!(stream.0, 1, "no write after the first failure");
    }
}
