//! Admin dashboard sessions (`admin_sessions`): a row per signed-in browser, keyed by the
//! SHA-256 of the session token its cookie carries, so the table never holds a credential.
//! A session is live until `expires_at`; one found expired is deleted on the spot.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::admin_sessions;
use super::DbConnection;
use crate::db::sql_types::At;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = admin_sessions)]
pub struct AdminSession {
    /// Hex SHA-256 of the cookie's token.
    pub token_hash: String,
    /// The token every dashboard form must carry back (`csrf_token`).
    pub csrf_token: String,
    #[diesel(serialize_as = At)]
    pub created_at: NaiveDateTime,
    #[diesel(serialize_as = At)]
    pub expires_at: NaiveDateTime,
}

/// Stores a new session, first deleting every expired one (sign-ins are rare, so this keeps
/// the table small without a job of its own).
pub fn create(conn: &mut DbConnection, session: &AdminSession) -> QueryResult<()> {
    diesel::delete(
        admin_sessions::table.filter(admin_sessions::expires_at.le(At(session.created_at))),
    )
    .execute(conn)?;
    crate::per_backend!(conn, |c| diesel::insert_into(admin_sessions::table)
        .values(session.clone())
        .execute(c))?;
    Ok(())
}

/// The live session of `token_hash` at `now`; an expired one is deleted and not returned.
pub fn find_live(
    conn: &mut DbConnection,
    token_hash: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<AdminSession>> {
    let found = admin_sessions::table
        .find(token_hash)
        .select(AdminSession::as_select())
        .first(conn)
        .optional()?;
    match found {
        Some(session) if session.expires_at > now => Ok(Some(session)),
        Some(_) => {
            delete(conn, token_hash)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Revokes a session; whether there was one.
pub fn delete(conn: &mut DbConnection, token_hash: &str) -> QueryResult<bool> {
    let deleted = diesel::delete(admin_sessions::table.find(token_hash)).execute(conn)?;
    Ok(deleted > 0)
}
