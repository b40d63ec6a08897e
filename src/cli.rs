//! The command line: `serve` (default), `migrate`, `seed-demo`, `token`, `reconcile`,
//! `events`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::auth::JwtKeys;
use crate::config::Settings;
use crate::db;

#[derive(Debug, Parser)]
#[command(
    name = "order-engine",
    version,
    about = "Order lifecycle engine: one actor per pending order"
)]
pub struct Cli {
    /// Settings file (default: ./config.toml when present, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a small demo catalog: users with points and coupons, courses with chapters.
    SeedDemo,
    /// Print a client JWT for a user.
    Token {
        /// The user's id.
        #[arg(long)]
        user: i64,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Ask the payment providers once about open and recently closed trades and apply what
    /// they report (the `reconcile_payments` job, run by hand).
    Reconcile {
        /// Pending orders' trades started longer ago than this are asked about.
        #[arg(long, default_value_t = 300)]
        min_age_secs: u64,
        /// Trades of orders closed or paid within this many seconds are asked about.
        #[arg(long, default_value_t = 86_400)]
        lookback_secs: u64,
    },
    /// Print the order-event stream (Redis), one JSON line per event, as a consumer group.
    Events {
        /// Keep waiting for new events (else stop once the stream has nothing new).
        #[arg(long)]
        follow: bool,
        /// Consumer group: each group gets every event once; readers in one group share them.
        #[arg(long, default_value = "order-engine-cli")]
        group: String,
        /// This reader's name in the group (its unacknowledged events come back to it).
        #[arg(long, default_value = "cli")]
        consumer: String,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Migrate => db::connect(&settings.database)
            .map(|_| log::info!("migrations are up to date"))
            .map_err(|e| e.to_string()),
        Command::SeedDemo => crate::seed::seed_demo(&settings),
        Command::Token { user, ttl_secs } => token(&settings, user, ttl_secs),
        Command::Reconcile {
            min_age_secs,
            lookback_secs,
        } => crate::providers::reconcile::run_once(&settings, min_age_secs, lookback_secs)
            .map(|done| println!("{done}")),
        Command::Events {
            follow,
            group,
            consumer,
        } => events(&settings, follow, group, consumer),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).map_err(|e| e.to_string())?;
        app.run_until_stopped().await.map_err(|e| e.to_string())?;
        log::info!("stopped");
        Ok(())
    })
}

fn events(
    settings: &Settings,
    follow: bool,
    group: String,
    consumer: String,
) -> Result<(), String> {
    let url = settings
        .redis
        .url
        .as_deref()
        .ok_or("redis.url is not set: order events need Redis")?;
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let opts = crate::redis::publisher::FollowOptions {
        stream: settings.redis.events_stream.clone(),
        group,
        consumer,
        follow,
    };
    let stdout = std::io::stdout();
    crate::redis::publisher::follow(&client, &opts, &mut stdout.lock()).map_err(|e| e.to_string())
}

fn token(settings: &Settings, user_id: i64, ttl_secs: u64) -> Result<(), String> {
    let pool = db::connect(&settings.database).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    match db::catalog::find_user(&mut conn, crate::domain::ids::UserId(user_id)) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("user {user_id} does not exist")),
        Err(e) => return Err(e.to_string()),
    }
    let token = JwtKeys::new(&settings.auth.jwt_secret)
        .issue(user_id, ttl_secs)
        .map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}
