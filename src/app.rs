//! Start-up: settings -> database pool (migrated) -> HTTP server bound to its port.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

use crate::actors::Engine;
use crate::auth::JwtKeys;
use crate::config::{DatabaseUrl, Settings};
use crate::db::{self, DbSetupError};
use crate::http::{self, AppState};
use crate::redis::RedisLink;

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

        let settings = Arc::new(settings);
        let engine =
            Engine::start(pool.clone(), settings.clone(), redis).map_err(StartupError::Recover)?;
        let state = web::Data::new(AppState {
            pool,
            jwt: JwtKeys::new(&settings.auth.jwt_secret),
            settings,
            engine,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::routes)
                .default_service(web::to(http::route_not_found))
        })
        .workers(workers)
        .shutdown_timeout(30)
        .listen(listener)
        .map_err(bind_err)?
        .run();
        Ok(Self {
            port: address.port(),
            server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT or SIGTERM (then finishes requests in flight) or until stopped
    /// through the handle.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
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
    }
}
