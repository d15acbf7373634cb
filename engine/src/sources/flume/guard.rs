//! What stands between a client's bytes and the `thrift` crate, which trusts them: the crate's
//! framed transport allocates whatever a frame's length prefix says (an HTTP request's `GET `
//! reads as a 1.2 GB frame) and its generated code reserves whatever a list's count says.
//!
//! - [`FrameGuard`] reads the connection for `TFramedReadTransport`, which does the framing (a
//!   4-byte big-endian length, then the frame). Before handing a length prefix on it checks it:
//!   from 1 to `max_frame` bytes, else the read fails and the connection is closed. It also
//!   waits out the socket's read timeout until the source stops, so an idle sender stays
//!   connected and a stop is seen within one timeout.
//! - [`BoundedInput`] refuses a list, set or map whose count is negative or larger than
//!   `max_frame` (every element takes at least a byte of the frame), before the generated code
//!   reserves room for it.

use std::io::{self, Read};
use std::net::TcpStream;

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier, TSetIdentifier,
    TStructIdentifier,
};
use tokio::sync::watch;

/// Reads a framed Thrift connection, checking every frame's length; see the module docs.
#[derive(Debug)]
pub(crate) struct FrameGuard {
    stream: TcpStream,
    max_frame: usize,
    stop: watch::Receiver<bool>,
    /// The current frame's length prefix and how much of it was handed on.
    header: [u8; 4],
    header_given: usize,
    /// Bytes of the current frame's body not yet handed on.
    body_left: usize,
}

impl FrameGuard {
    /// Guards `stream`, which has a read timeout set.
    pub(crate) fn new(stream: TcpStream, max_frame: usize, stop: watch::Receiver<bool>) -> Self {
        Self { stream, max_frame, stop, header: [0; 4], header_given: 4, body_left: 0 }
    }

    /// One read of the socket, waiting out read timeouts until the source stops.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if *self.stop.borrow() {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the source is stopping"));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// Reads the next frame's length prefix and checks it.
    fn next_frame(&mut self) -> io::Result<()> {
        let mut got = 0;
        while got < 4 {
            let mut header = self.header;
            match self.read_some(&mut header[got..])? {
                0 if got == 0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                0 => return Err(io::Error::new(io::ErrorKind::InvalidData, "connection closed inside a frame header")),
                n => got += n,
            }
            self.header = header;
        }
        let len = i32::from_be_bytes(self.header);
        check_frame(len, self.max_frame, &self.header)?;
        self.header_given = 0;
        self.body_left = len as usize;
        Ok(())
    }
}

/// Whether a frame of `len` bytes may be read; the error says why not (and what the first
/// bytes look like when they are not Thrift).
fn check_frame(len: i32, max_frame: usize, header: &[u8; 4]) -> io::Result<()> {
    if len > 0 && len as usize <= max_frame {
        return Ok(());
    }
    let looks_like = match header {
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"HTTP" | b"DELE" | b"OPTI" | b"PATC" => {
            " (the client speaks HTTP, not Flume's framed Thrift)"
        }
        [0x16, 0x03, ..] => " (the client speaks TLS, not Flume's framed Thrift)",
        [0x82 | 0x80, ..] => " (an unframed Thrift message: the client must use the framed transport)",
        _ => "",
    };
    let message = if len <= 0 {
        format!("frame length {len}: not a framed Thrift message{looks_like}")
    } else {
        format!("frame of {len} bytes is larger than max_frame ({max_frame} bytes){looks_like}")
    };
    Err(io::Error::new(io::ErrorKind::InvalidData, message))
}

impl Read for FrameGuard {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.header_given == 4 && self.body_left == 0 {
            self.next_frame()?;
        }
        if self.header_given < 4 {
            let n = buf.len().min(4 - self.header_given);
            buf[..n].copy_from_slice(&self.header[self.header_given..self.header_given + n]);
            self.header_given += n;
            return Ok(n);
        }
        let want = buf.len().min(self.body_left);
        let n = self.read_some(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "connection closed inside a frame"));
        }
        self.body_left -= n;
        Ok(n)
    }
}

/// An input protocol that refuses counts no frame of `max_frame` bytes can hold, and notes
/// every error it returns in `failed`: the generated processor answers a call it cannot decode
/// with an exception and carries on in the middle of a frame, so the connection checks
/// `failed` after each call and closes.
#[derive(Debug)]
pub(crate) struct BoundedInput<P> {
    inner: P,
    max_frame: usize,
    failed: Failed,
}

/// Why a call could not be read, once one could not.
pub(crate) type Failed = std::rc::Rc<std::cell::RefCell<Option<String>>>;

impl<P> BoundedInput<P> {
    pub(crate) fn new(inner: P, max_frame: usize, failed: Failed) -> Self {
        Self { inner, max_frame, failed }
    }

    /// Notes an error.
    fn seen<T>(&self, result: thrift::Result<T>) -> thrift::Result<T> {
        if let Err(err) = &result {
            self.failed.replace(Some(err.to_string()));
        }
        result
    }

    fn check(&self, what: &str, size: i32) -> thrift::Result<()> {
        if size >= 0 && size as usize <= self.max_frame {
            return Ok(());
        }
        Err(thrift::Error::Protocol(thrift::ProtocolError::new(
            thrift::ProtocolErrorKind::SizeLimit,
            format!("a {what} of {size} elements cannot be in a frame of at most {} bytes", self.max_frame),
        )))
    }
}

impl<P: TInputProtocol> TInputProtocol for BoundedInput<P> {
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let list = self.inner.read_list_begin();
        let list = self.seen(list)?;
        self.seen(self.check("list", list.size))?;
        Ok(list)
    }

    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let set = self.inner.read_set_begin();
        let set = self.seen(set)?;
        self.seen(self.check("set", set.size))?;
        Ok(set)
    }

    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let map = self.inner.read_map_begin();
        let map = self.seen(map)?;
        self.seen(self.check("map", map.size))?;
        Ok(map)
    }

    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        let result = self.inner.read_message_begin();
        self.seen(result)
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_message_end();
        self.seen(result)
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        let result = self.inner.read_struct_begin();
        self.seen(result)
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_struct_end();
        self.seen(result)
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        let result = self.inner.read_field_begin();
        self.seen(result)
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_field_end();
        self.seen(result)
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        let result = self.inner.read_bool();
        self.seen(result)
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        let result = self.inner.read_bytes();
        self.seen(result)
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        let result = self.inner.read_i8();
        self.seen(result)
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        let result = self.inner.read_i16();
        self.seen(result)
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        let result = self.inner.read_i32();
        self.seen(result)
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        let result = self.inner.read_i64();
        self.seen(result)
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        let result = self.inner.read_double();
        self.seen(result)
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        let result = self.inner.read_string();
        self.seen(result)
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_list_end();
        self.seen(result)
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_set_end();
        self.seen(result)
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        let result = self.inner.read_map_end();
        self.seen(result)
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        let result = self.inner.read_byte();
        self.seen(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_outside_one_to_max_frame_are_refused_and_http_is_named() {
        assert!(check_frame(100, 1024, &[0, 0, 0, 100]).is_ok());
        let too_big = check_frame(2048, 1024, &[0, 0, 8, 0]).unwrap_err().to_string();
        assert_eq!(too_big, "frame of 2048 bytes is larger than max_frame (1024 bytes)");
        let http = check_frame(i32::from_be_bytes(*b"GET "), 1024, b"GET ").unwrap_err().to_string();
        assert!(http.ends_with("(the client speaks HTTP, not Flume's framed Thrift)"), "{http}");
        let negative = check_frame(-2, 1024, &[0xff, 0xff, 0xff, 0xfe]).unwrap_err().to_string();
        assert!(negative.starts_with("frame length -2: not a framed Thrift message"), "{negative}");
    }
}
