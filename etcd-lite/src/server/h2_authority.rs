//! Tolerance for a quirk of etcd's own Go clients. For per-endpoint calls (`etcdctl
//! endpoint status`, for one) grpc-go sends the whole endpoint URL, `http://host:port`, as
//! the HTTP/2 `:authority`. Go's gRPC server ignores it; the Rust HTTP/2 stack rejects the
//! request as malformed. This layer sits between the socket and the HTTP/2 server, decodes
//! each request header block (HPACK) and re-encodes it with the URL's scheme stripped from
//! the authority. A client sends one authority per connection, so the first header block
//! decides: if it is fine, the connection is passed through untouched from then on (and the
//! block itself is forwarded as received); otherwise every block of the connection is
//! rewritten. A connection that does not start with the HTTP/2 preface (plain HTTP/1.1 for
//! `/metrics`) is not inspected at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest maximum frame size HTTP/2 allows; re-encoded blocks are split to fit it.
const MAX_FRAME: usize = 16_384;

enum Mode {
    Preface,
    Frames,
    Passthrough,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Block {
    /// The frames exactly as received, forwarded when nothing needs fixing.
    original: BytesMut,
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
}

/// Wraps an inbound connection and repairs request `:authority` headers on the way in.
pub struct AuthorityFix<T> {
    inner: T,
    mode: Mode,
    raw: BytesMut,
    ready: BytesMut,
    block: Option<Block>,
    decoder: Decoder<'static>,
    /// Set once a block needed fixing: the server's HPACK table then no longer mirrors the
    /// client's, so every later block must be re-encoded too.
    rewrite: bool,
    eof: bool,
}

impl<T> AuthorityFix<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Preface,
            raw: BytesMut::with_capacity(16 * 1024),
            ready: BytesMut::with_capacity(16 * 1024),
            block: None,
            decoder: Decoder::new(),
            rewrite: false,
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Moves as much of `raw` as can be processed into `ready`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.raw.split();
                    self.ready.extend_from_slice(&all);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.raw.split_to(PREFACE.len());
                    self.ready.extend_from_slice(&preface);
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len =
                        u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
                    if self.raw.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let kind = self.raw[3];
                    let flags = self.raw[4];
                    let stream_id =
                        u32::from_be_bytes([self.raw[5], self.raw[6], self.raw[7], self.raw[8]])
                            & 0x7fff_ffff;
                    let frame = self.raw.split_to(FRAME_HEADER + len);
                    match kind {
                        HEADERS => self.start_block(stream_id, flags, &frame)?,
                        CONTINUATION => self.continue_block(stream_id, flags, &frame)?,
                        _ if self.block.is_some() => {
                            return Err(protocol(
                                "a header block was interrupted by another frame",
                            ));
                        }
                        _ => self.ready.extend_from_slice(&frame),
                    }
                }
            }
        }
    }

    fn start_block(&mut self, stream_id: u32, flags: u8, frame: &[u8]) -> io::Result<()> {
        let mut p = &frame[FRAME_HEADER..];
        let mut pad = 0usize;
        if flags & PADDED != 0 {
            pad = *p
                .first()
                .ok_or_else(|| protocol("empty padded HEADERS frame"))? as usize;
            p = &p[1..];
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            let bytes: [u8; 5] = p
                .get(..5)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| protocol("short priority field"))?;
            priority = Some(bytes);
            p = &p[5..];
        }
        let fragment = p
            .get(
                ..p.len()
                    .checked_sub(pad)
                    .ok_or_else(|| protocol("padding longer than the frame"))?,
            )
            .ok_or_else(|| protocol("bad padding"))?;
        self.block = Some(Block {
            original: BytesMut::from(frame),
            stream_id,
            flags: flags & !(PADDED | PRIORITY | END_HEADERS),
            priority,
            fragment: BytesMut::from(fragment),
        });
        if flags & END_HEADERS != 0 {
            self.finish_block()?;
        }
        Ok(())
    }

    fn continue_block(&mut self, stream_id: u32, flags: u8, frame: &[u8]) -> io::Result<()> {
        let block = self
            .block
            .as_mut()
            .filter(|b| b.stream_id == stream_id)
            .ok_or_else(|| protocol("CONTINUATION without a HEADERS frame"))?;
        block.original.extend_from_slice(frame);
        block.fragment.extend_from_slice(&frame[FRAME_HEADER..]);
        if flags & END_HEADERS != 0 {
            self.finish_block()?;
        }
        Ok(())
    }

    /// Decodes the block (keeping the client's HPACK table in step), fixes the authority,
    /// and re-encodes it with literals only, so the server's table is never used.
    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        let mut result = Ok(());
        let mut fixed = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value = if name.as_ref() == b":authority" {
                    let v = fix_authority(&value);
                    fixed |= v.as_slice() != value.as_ref();
                    v
                } else {
                    value.into_owned()
                };
                if let Err(e) = encode_literal(&name, &value, &mut encoded) {
                    result = Err(e);
                }
            })
            .map_err(|e| protocol(&format!("undecodable header block: {e:?}")))?;
        result?;
        if !fixed && !self.rewrite {
            // The client's authority is fine: hand its bytes on and stop inspecting.
            self.ready.extend_from_slice(&block.original);
            self.mode = Mode::Passthrough;
            return Ok(());
        }
        self.rewrite = true;
        let mut payload = BytesMut::new();
        if let Some(p) = block.priority {
            payload.extend_from_slice(&p);
        }
        payload.extend_from_slice(&encoded);
        let mut first = true;
        let mut rest = &payload[..];
        while first || !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let (chunk, tail) = rest.split_at(n);
            let mut flags = if first {
                block.flags | block.priority.map_or(0, |_| PRIORITY)
            } else {
                0
            };
            if tail.is_empty() {
                flags |= END_HEADERS;
            }
            self.ready.put_uint(chunk.len() as u64, 3);
            self.ready
                .put_u8(if first { HEADERS } else { CONTINUATION });
            self.ready.put_u8(flags);
            self.ready.put_u32(block.stream_id);
            self.ready.extend_from_slice(chunk);
            rest = tail;
            first = false;
        }
        Ok(())
    }
}

/// `http://host:port[/...]` becomes `host:port`; anything else is left alone.
fn fix_authority(value: &[u8]) -> Vec<u8> {
    let Some(pos) = value.windows(3).position(|w| w == b"://") else {
        return value.to_vec();
    };
    let rest = &value[pos + 3..];
    let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
    rest[..end].to_vec()
}

/// A "literal header field without indexing — new name" representation (RFC 7541 6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.push(0);
    for s in [name, value] {
        loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out)?;
        out.extend_from_slice(s);
    }
    Ok(())
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {what}"))
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                        // Whatever is left is an incomplete frame; hand it on for the HTTP/2
                        // server to report.
                        let rest = this.raw.split();
                        this.ready.extend_from_slice(&rest);
                        continue;
                    }
                    this.raw.extend_from_slice(rb.filled());
                    if let Err(e) = this.process() {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let mut fix = AuthorityFix::new(&input[..]);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.expect("read");
        out
    }

    fn headers_of(out: &[u8], decoder: &mut Decoder<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let body = &out[PREFACE.len()..];
        let len = u32::from_be_bytes([0, body[0], body[1], body[2]]) as usize;
        assert_eq!(body[3], HEADERS);
        assert_ne!(body[4] & END_HEADERS, 0);
        decoder
            .decode(&body[FRAME_HEADER..FRAME_HEADER + len])
            .expect("decodes")
    }

    #[tokio::test]
    async fn a_url_authority_loses_its_scheme_and_other_headers_survive() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":authority", b"http://127.0.0.1:2379"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
        ]);
        let mut input = PREFACE.to_vec();
        // Split the block across HEADERS + CONTINUATION, with padding, to exercise both.
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![2u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | 0x1, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, 0x1, 1, b"data"));
        let out = run(input).await;
        let headers = headers_of(&out, &mut Decoder::new());
        assert_eq!(
            headers[1],
            (b":authority".to_vec(), b"127.0.0.1:2379".to_vec())
        );
        assert_eq!(headers[2].1, b"/etcdserverpb.Maintenance/Status".to_vec());
        assert!(out.ends_with(b"data"));
    }

    #[tokio::test]
    async fn http1_connections_pass_through_untouched() {
        let input = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(run(input.clone()).await, input);
    }

    #[test]
    fn plain_authorities_are_kept() {
        assert_eq!(fix_authority(b"127.0.0.1:2379"), b"127.0.0.1:2379".to_vec());
        assert_eq!(fix_authority(b"http://h:1/x"), b"h:1".to_vec());
    }
}

#[cfg(test)]
mod passthrough_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_connection_with_a_valid_authority_is_forwarded_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for stream in [1u32, 3] {
            let block = enc.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":authority", b"127.0.0.1:2379"),
            ]);
            input.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
            input.extend_from_slice(&[HEADERS, END_HEADERS]);
            input.extend_from_slice(&stream.to_be_bytes());
            input.extend_from_slice(&block);
        }
        let mut fix = AuthorityFix::new(&input[..]);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, input);
    }
}
