//! Start-up: settings -> database pool (migrated) -> HTTP server bound to its port.

use std::future::ready;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, KeepAlive, Protocol};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server, ServerHandle, Service};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};

use crate::actors::Engine;
use crate::auth::JwtKeys;
use crate::config::{DatabaseUrl, Settings};
use crate::db::{self, DbSetupError};
use crate::http::request_timeout::{self, TimedStream};
use crate::http::{self, AppState};
use crate::redis::RedisLink;

/// How long a stopping engine waits for its schedule runs under way (after that a run is
/// taken over by another process once its lease passes).
const SCHEDULE_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbSetupError),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error("cannot recover pending orders: {0}")]
    Recover(crate::error::ApiError),
    #[error("invalid redis.url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A built engine: bound to its port, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    /// The engine, to let its schedule runs under way finish once the server has stopped.
    core: Arc<crate::actors::Core>,
}

impl Application {
    /// Connects and migrates the database, binds `server.bind` and builds the server. Must be
    /// called inside an actix system.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let pool = db::connect(&settings.database)?;
        let redis = match &settings.redis.url {
            Some(url) => Some(Arc::new(RedisLink::open(url, &settings.redis.key_prefix)?)),
            None => None,
        };
        let bind = settings.server.bind.clone();
        let bind_err = |source| StartupError::Bind {
            bind: bind.clone(),
            source,
        };
        let listener = TcpListener::bind(&bind).map_err(bind_err)?;
        let address = listener.local_addr().map_err(bind_err)?;
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        log::info!(
            "node {} serving http://{address} with {workers} workers on {}",
            settings.cluster.node_id,
            describe(&settings.database.url),
        );

        let timeout = Duration::from_secs(settings.server.request_timeout_secs);
        let settings = Arc::new(settings);
        let engine =
            Engine::start(pool.clone(), settings.clone(), redis).map_err(StartupError::Recover)?;
        let core = engine.core.clone();
        let state = web::Data::new(AppState {
            pool,
            jwt: JwtKeys::new(&settings.auth.jwt_secret),
            settings,
            engine,
        });
        let builder = actix_server::Server::build()
            .workers(workers)
            .shutdown_timeout(30);
        let shutdown = builder.graceful_shutdown_signal();
        // What actix-web's HttpServer builds, but on a TimedStream per connection, whose
        // request timeout actix's own head timer (turned off here) cannot provide.
        let server = builder
            .listen("order-engine", listener, move || {
                let state = state.clone();
                let core = state.engine.core.clone();
                let shutdown = shutdown.clone();
                let app = App::new()
                    .app_data(state)
                    .configure(http::routes)
                    .default_service(web::to(http::route_not_found))
                    .wrap_fn(move |req, service| {
                        let clock = request_timeout::enter(&req, timeout);
                        let started = Instant::now();
                        let method = req.method().clone();
                        let core = core.clone();
                        let response = service.call(req);
                        async move {
                            let response = response.await;
                            if let Some(clock) = clock {
                                clock.answered();
                            }
                            if let Ok(response) = &response {
                                core.metrics.request(
                                    method.as_str(),
                                    response.request().match_pattern().as_deref(),
                                    response.status().as_u16(),
                                    started.elapsed().as_secs_f64(),
                                );
                            }
                            response
                        }
                    })
                    .into_factory()
                    .map_err(|err| err.error_response());
                let http = HttpService::build()
                    .keep_alive(KeepAlive::Timeout(request_timeout::IDLE))
                    .client_request_timeout(Duration::ZERO)
                    .client_disconnect_timeout(request_timeout::LINGER)
                    .local_addr(address)
                    // As HttpServer does: a graceful stop closes idle kept-alive connections.
                    .graceful_shutdown_signal(move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    })
                    .on_connect_ext(|io: &TimedStream, data: &mut Extensions| {
                        data.insert(io.clock());
                    })
                    // The app's host and address are only used to build URLs, which it does not.
                    .finish(map_config(app, |_| AppConfig::default()));
                fn_service(move |io: TcpStream| {
                    let peer = io.peer_addr().ok();
                    ready(Ok::<_, DispatchError>((
                        TimedStream::new(io, timeout),
                        Protocol::Http1,
                        peer,
                    )))
                })
                .and_then(http)
            })
            .map_err(bind_err)?
            .run();
        Ok(Self {
            port: address.port(),
            server,
            core,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT or SIGTERM (then finishes requests in flight) or until stopped
    /// through the handle; then stops the scheduler and waits a while for its runs under way.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        let core = self.core;
        let _ = actix_web::rt::task::spawn_blocking(move || {
            core.stop_schedules(SCHEDULE_DRAIN);
        })
        .await;
        served
    }
}

/// The database for a log line, without credentials.
fn describe(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite(path) => format!("SQLite file {}", path.display()),
        DatabaseUrl::Postgres(url) => {
            let host = url.rsplit('@').next().unwrap_or(url);
            format!(
                "PostgreSQL {}",
                host.trim_start_matches("postgres://")
                    .trim_start_matches("postgresql://")
            )
        }
        #[cfg(feature = "mysql")]
        DatabaseUrl::Mysql(mysql) => {
            let url = &mysql.url;
            let host = url.rsplit('@').next().unwrap_or(url);
            format!("MySQL {}", host.trim_start_matches("mysql://"))
        }
    }
}
