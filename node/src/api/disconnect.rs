//! Watching each client connection: noticing clients that went away while their request waits,
//! and closing connections that stall between requests.
//!
//! actix-web does not cancel a handler when its client disconnects (actix/actix-web#3462), so
//! a node would compute pairs nobody will read. At connect time we keep a duplicate of the
//! connection's socket; while a request waits for scores, a cheap non-blocking peek tells
//! whether the client closed its side. A client that half-closes (sends FIN) and still waits
//! for the answer counts as gone — no common HTTP client does that.
//!
//! actix-web's own head timeout (`client_request_timeout`) covers only a connection's first
//! request: on a kept-alive connection, the next request's head may then arrive a byte at a time
//! for ever (measured: still open after 20 s with the default 5 s timeouts). So each connection
//! also gets a watchdog: once no request is in flight for longer than the keep-alive interval and
//! the read timeout together, the connection can only be trickling a head (idle ones are closed
//! by keep-alive first) or refusing to read its response, and the watchdog shuts the socket down.
//!
//! The duplicate costs one file descriptor per open connection, bounded with the connections
//! themselves by `MAX_CONNECTIONS`; it closes with its connection. It is what makes the watchdog
//! safe: a shutdown through it can only reach this connection's socket, never a later one that
//! reused the descriptor number.

use std::any::Any;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often a waiting request checks its client.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A duplicate of a client connection's socket, used only to peek.
#[derive(Clone)]
pub struct ClientSocket(Arc<socket2::Socket>);

/// What a connection's watchdog reads: requests in flight, and when the last one ended.
struct Activity {
    in_flight: Cell<usize>,
    last_end: Cell<Instant>,
}

/// A connection's entry in its extensions: the requests it carries, and the guard that stops its
/// watchdog when the connection is dropped.
struct ConnectionWatch {
    activity: Rc<Activity>,
    _stop: DropGuard,
}

/// Ends one request's span of activity on its connection, however the request ends.
struct InFlight(Rc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
        self.0.last_end.set(Instant::now());
    }
}

/// `HttpServer::on_connect` hook: remembers each TCP connection's socket and starts its
/// watchdog, which shuts the connection down once it has had no request in flight for
/// `between_requests` (the keep-alive interval plus the read timeout).
pub fn remember_socket(
    connection: &dyn Any,
    extensions: &mut Extensions,
    between_requests: Duration,
) {
    let Some(stream) = connection.downcast_ref::<TcpStream>() else {
        return;
    };
    let Ok(socket) = socket2::SockRef::from(stream).try_clone() else {
        return;
    };
    let socket = Arc::new(socket);
    let activity = Rc::new(Activity {
        in_flight: Cell::new(0),
        last_end: Cell::new(Instant::now()),
    });
    let stop = CancellationToken::new();
    actix_web::rt::spawn(watch(
        activity.clone(),
        Arc::downgrade(&socket),
        stop.clone(),
        between_requests,
    ));
    extensions.insert(ClientSocket(socket));
    extensions.insert(ConnectionWatch {
        activity,
        _stop: stop.drop_guard(),
    });
}

/// The watchdog of one connection: sleeps until the connection could have been quiet for
/// `limit`, and shuts it down if it was. Holds the socket weakly, so it never keeps a closed
/// connection's descriptor open; ends when the connection is dropped (`stop`).
async fn watch(
    activity: Rc<Activity>,
    socket: Weak<socket2::Socket>,
    stop: CancellationToken,
    limit: Duration,
) {
    loop {
        let quiet_since = if activity.in_flight.get() > 0 {
            Instant::now()
        } else {
            activity.last_end.get()
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(quiet_since + limit) => {}
        }
        let quiet =
            activity.in_flight.get() == 0 && activity.last_end.get() + limit <= Instant::now();
        if quiet {
            if let Some(socket) = socket.upgrade() {
                tracing::debug!(?limit, "closing a connection stalled between requests");
                // Both directions: actix's next read sees the end of the stream and drops the
                // connection; a failure means the peer is gone already.
                let _ = socket.shutdown(Shutdown::Both);
            }
            return;
        }
    }
}

/// Middleware: marks a request in flight on its connection for as long as it is being handled,
/// so the connection's watchdog leaves it alone.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let _in_flight = req.conn_data::<ConnectionWatch>().map(|watch| {
        let activity = &watch.activity;
        activity.in_flight.set(activity.in_flight.get() + 1);
        InFlight(activity.clone())
    });
    next.call(req).await
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
