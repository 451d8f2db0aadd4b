//! Graceful shutdown, shared by node and coordinator: what a rollout's SIGTERM (and Ctrl-C's
//! SIGINT) does to a server.
//!
//! 1. **Mark draining** ([`Draining`]): `/health` answers 503 `draining` at once; a node also
//!    refuses new rerank requests with 503 (a coordinator retries them elsewhere).
//! 2. **Leave**: the server's own step — a node withdraws its registration from the cluster
//!    registry.
//! 3. **Notice** (`SHUTDOWN_NOTICE_MS` from the signal): keep listening, so that coordinators and
//!    load balancers see the 503s and the registration gone and stop sending work here.
//! 4. **Stop accepting**: the listeners close; actix-web finishes each in-flight request and
//!    closes every connection, idle kept-alive ones at once.
//! 5. **Exit**, when the last request is done or `SHUTDOWN_GRACE_MS` after the signal, whichever
//!    comes first; a second signal exits at once.
//!
//! actix-web's own signal handling must be off (`HttpServer::disable_signals`): it would stop
//! accepting at the first SIGTERM, before anyone noticed, and it treats SIGINT as a forced stop.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Whether this server is draining: shared by the handlers that answer differently then
/// (`/health`, a node's rerank endpoints) and the shutdown sequence that sets it.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// True from the stop signal on.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn start(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// How long the phases of a drain may take, from the signal on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTiming {
    /// `SHUTDOWN_NOTICE_MS`: the time to keep listening before the listeners close.
    pub notice: Duration,
    /// `SHUTDOWN_GRACE_MS`: the longest the whole drain takes.
    pub grace: Duration,
}

impl DrainTiming {
    /// The timing of `SHUTDOWN_NOTICE_MS` and `SHUTDOWN_GRACE_MS`.
    pub fn from_millis(notice_ms: u64, grace_ms: u64) -> Self {
        Self {
            notice: Duration::from_millis(notice_ms),
            grace: Duration::from_millis(grace_ms),
        }
    }

    /// What to give `HttpServer::shutdown_timeout` (whole seconds): never shorter than the grace
    /// period, whose own deadline is what ends a drain.
    pub fn server_shutdown_timeout_secs(&self) -> u64 {
        self.grace.as_secs() + 1
    }
}

/// What asked the server to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    Sigterm,
    Sigint,
    /// A [`StopSender`] (tests, embedding code).
    Requested,
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sigterm => "SIGTERM",
            Self::Sigint => "SIGINT",
            Self::Requested => "stop request",
        })
    }
}

/// The requests to stop a server receives, in order: the first starts a drain, a second cuts it
/// short.
#[derive(Debug)]
pub struct StopRequests(mpsc::UnboundedReceiver<StopCause>);

/// Asks the server of a [`StopRequests::channel`] to stop.
#[derive(Debug, Clone)]
pub struct StopSender(mpsc::UnboundedSender<StopCause>);

impl StopSender {
    /// One stop request (the first drains, the next forces).
    pub fn stop(&self) {
        let _ = self.0.send(StopCause::Requested);
    }
}

impl StopRequests {
    /// SIGTERM and SIGINT, caught from now on instead of ending the process. Needs the runtime
    /// the server runs on.
    pub fn from_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = mpsc::unbounded_channel();
        actix_web::rt::spawn(async move {
            loop {
                let cause = tokio::select! {
                    Some(()) = term.recv() => StopCause::Sigterm,
                    Some(()) = int.recv() => StopCause::Sigint,
                    else => return,
                };
                if tx.send(cause).is_err() {
                    return;
                }
            }
        });
        Ok(Self(rx))
    }

    /// Stop requests sent through the returned [`StopSender`].
    pub fn channel() -> (StopSender, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (StopSender(tx), Self(rx))
    }

    /// The next request; never resolves once no sender is left.
    async fn next(&mut self) -> StopCause {
        match self.0.recv().await {
            Some(cause) => cause,
            None => std::future::pending().await,
        }
    }
}

/// How a served server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The server stopped by itself, without a stop request.
    Unasked,
    /// Every in-flight request finished within the grace period.
    Drained { cause: StopCause, took: Duration },
    /// The grace period ended first: requests still in flight were cut off.
    GraceOver { cause: StopCause, took: Duration },
    /// A second stop request came during the drain.
    Forced { cause: StopCause, took: Duration },
}

/// Runs `server` until it is stopped, draining it on the first of `stops` as the module docs
/// describe: marks `draining`, runs `leave`, keeps listening until `timing.notice` after the
/// request, then stops accepting and lets in-flight requests finish until `timing.grace` after
/// it. Returning drops the server, which closes whatever connections are left.
pub async fn serve_until_drained<L>(
    server: Server,
    draining: &Draining,
    timing: DrainTiming,
    leave: L,
    mut stops: StopRequests,
) -> std::io::Result<Stopped>
where
    L: Future<Output = ()>,
{
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    let cause = tokio::select! {
        served = &mut server => return served.map(|()| Stopped::Unasked),
        cause = stops.next() => cause,
    };
    let asked = Instant::now();
    let deadline = asked + timing.grace;
    let took = || asked.elapsed();
    tracing::info!(
        %cause,
        notice_ms = timing.notice.as_millis() as u64,
        grace_ms = timing.grace.as_millis() as u64,
        "draining: /health answers 503 draining; taking no new work"
    );
    draining.start();
    let notice_over = asked + timing.notice.min(timing.grace);
    let announce = async {
        leave.await;
        tokio::time::sleep_until(notice_over).await;
    };
    tokio::select! {
        served = &mut server => return served.map(|()| Stopped::Drained { cause, took: took() }),
        _ = tokio::time::timeout_at(deadline, announce) => {}
        again = stops.next() => {
            tracing::warn!(cause = %again, "second stop request: stopping at once");
            return Ok(Stopped::Forced { cause, took: took() });
        }
    }
    tracing::info!("draining: no longer accepting connections; finishing in-flight requests");
    // Sending the command is all this does; the server's own future tells when it is done.
    drop(handle.stop(true));
    tokio::select! {
        served = &mut server => {
            served?;
            tracing::info!(took_ms = took().as_millis() as u64, "drained");
            Ok(Stopped::Drained { cause, took: took() })
        }
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(
                grace_ms = timing.grace.as_millis() as u64,
                "grace period over with requests still in flight: closing their connections"
            );
            Ok(Stopped::GraceOver { cause, took: took() })
        }
        again = stops.next() => {
            tracing::warn!(cause = %again, "second stop request: stopping at once");
            Ok(Stopped::Forced { cause, took: took() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{web, App, HttpResponse, HttpServer};

    /// A server with `/slow` (answers after `slow`) and `/health` (503 while draining), on a
    /// free port of 127.0.0.1, not yet polled.
    fn test_server(draining: &Draining, slow: Duration, timing: DrainTiming) -> (Server, String) {
        let flag = draining.clone();
        let http = HttpServer::new(move || {
            let flag = flag.clone();
            App::new()
                .route(
                    "/slow",
                    web::get().to(move || async move {
                        tokio::time::sleep(slow).await;
                        HttpResponse::Ok().body("done")
                    }),
                )
                .route(
                    "/health",
                    web::get().to(move || {
                        let draining = flag.is_draining();
                        async move {
                            if draining {
                                HttpResponse::ServiceUnavailable().body("draining")
                            } else {
                                HttpResponse::Ok().body("ok")
                            }
                        }
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(timing.server_shutdown_timeout_secs())
        .bind(("127.0.0.1", 0))
        .expect("bind");
        let base = format!("http://{}", http.addrs()[0]);
        (http.run(), base)
    }

    async fn get(base: &str, path: &str) -> Result<(u16, String), reqwest::Error> {
        let r = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }

    /// A request in flight at the stop request completes; `/health` says draining during the
    /// notice; then connections are refused, and the drain ends as soon as the request is done,
    /// well before the grace period.
    #[actix_web::test]
    async fn a_drain_finishes_in_flight_work_and_refuses_new_connections() {
        let draining = Draining::default();
        let timing = DrainTiming::from_millis(400, 10_000);
        let (server, base) = test_server(&draining, Duration::from_millis(1500), timing);
        let (stop, stops) = StopRequests::channel();
        let (left_tx, left_rx) = tokio::sync::oneshot::channel();
        let leave = async move {
            let _ = left_tx.send(());
        };
        let flag = draining.clone();
        let served = actix_web::rt::spawn(async move {
            serve_until_drained(server, &flag, timing, leave, stops).await
        });
        assert_eq!(get(&base, "/health").await.expect("up").0, 200);
        let slow = actix_web::rt::spawn({
            let base = base.clone();
            async move { get(&base, "/slow").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        stop.stop();
        left_rx.await.expect("the leave step ran");
        assert!(draining.is_draining());
        assert_eq!(
            get(&base, "/health").await.expect("still listening"),
            (503, "draining".to_string())
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            get(&base, "/health").await.is_err(),
            "connections are refused after the notice"
        );
        let answer = slow.await.expect("joined").expect("the in-flight request");
        assert_eq!(answer, (200, "done".to_string()));
        let stopped = served.await.expect("joined").expect("served");
        let Stopped::Drained { cause, took } = stopped else {
            panic!("{stopped:?}");
        };
        assert_eq!(cause, StopCause::Requested);
        assert!(took < Duration::from_secs(5), "drained in {took:?}");
        assert!(asked.elapsed() < Duration::from_secs(5));
    }

    /// Work that outlasts the grace period is cut off at its end; a second request cuts a
    /// drain short at once.
    #[actix_web::test]
    async fn the_grace_period_and_a_second_request_bound_the_drain() {
        let timing = DrainTiming::from_millis(100, 800);
        let draining = Draining::default();
        let (server, base) = test_server(&draining, Duration::from_secs(30), timing);
        let (stop, stops) = StopRequests::channel();
        let flag = draining.clone();
        let served = actix_web::rt::spawn(async move {
            serve_until_drained(server, &flag, timing, async {}, stops).await
        });
        let slow = actix_web::rt::spawn({
            let base = base.clone();
            async move { get(&base, "/slow").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.stop();
        let stopped = served.await.expect("joined").expect("served");
        let Stopped::GraceOver { took, .. } = stopped else {
            panic!("{stopped:?}");
        };
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(
            slow.await.expect("joined").is_err(),
            "the cut-off request gets no answer"
        );

        let draining = Draining::default();
        let timing = DrainTiming::from_millis(5_000, 10_000);
        let (server, _) = test_server(&draining, Duration::from_secs(1), timing);
        let (stop, stops) = StopRequests::channel();
        let flag = draining.clone();
        let served = actix_web::rt::spawn(async move {
            serve_until_drained(server, &flag, timing, async {}, stops).await
        });
        stop.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.stop();
        let stopped = served.await.expect("joined").expect("served");
        assert!(
            matches!(stopped, Stopped::Forced { took, .. } if took < Duration::from_secs(2)),
            "{stopped:?}"
        );
    }
}
