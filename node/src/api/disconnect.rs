//! Noticing that an HTTP client went away while its request waits.
//!
//! actix-web does not cancel a handler when its client disconnects (actix/actix-web#3462), so
//! a node would compute pairs nobody will read. At connect time we keep a duplicate of the
//! connection's socket; while a request waits for scores, a cheap non-blocking peek tells
//! whether the client closed its side. A client that half-closes (sends FIN) and still waits
//! for the answer counts as gone — no common HTTP client does that.

use std::any::Any;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

/// How often a waiting request checks its client.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A duplicate of a client connection's socket, used only to peek.
#[derive(Clone)]
pub struct ClientSocket(Arc<socket2::Socket>);

/// `HttpServer::on_connect` hook: remembers each TCP connection's socket.
pub fn remember_socket(connection: &dyn Any, extensions: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<TcpStream>() {
        if let Ok(socket) = socket2::SockRef::from(stream).try_clone() {
            extensions.insert(ClientSocket(Arc::new(socket)));
        }
    }
}

impl ClientSocket {
    /// True once the peer closed or reset the connection. The duplicate shares the original's
    /// non-blocking mode, so the peek never blocks.
    pub fn is_closed(&self) -> bool {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        match self.0.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Resolves when the client is gone; pending forever while it stays.
    pub async fn closed(&self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if self.is_closed() {
                return;
            }
        }
    }
}
