//! The SPEC's List: `{"data", "has_more", "next_after"}`, newest first, `limit` 1-100 (default
//! 50). A bad `limit`, an unknown parameter, or an `after` the list could not have issued is 400
//! `invalid_request`. A cursor of the right shape is a keyset position whether or not a row
//! still has it; anything else (another list's cursor, a number written differently, garbage)
//! is refused rather than read as some position.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::domain::canonical_id;
use crate::error::ApiError;

/// The SPEC's List of `T`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass back as `after` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_after: Option<String>,
}

/// `limit` of a list, and how to build its page.
pub struct Paging {
    limit: i64,
}

impl Paging {
    pub fn parse(limit: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => 50,
            Some(text) => canonical_id(text)
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    ApiError::InvalidRequest("limit must be an integer from 1 to 100".into())
                })?,
        };
        Ok(Self { limit })
    }

    /// One more row than the page holds is read, to know whether there is a next page.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    pub fn respond<T: Serialize>(
        &self,
        rows: Vec<T>,
        cursor: impl Fn(&T) -> String,
    ) -> HttpResponse {
        HttpResponse::Ok().json(self.page(rows, cursor))
    }

    /// The page of `rows` (read with [`Paging::fetch`]), with its cursor.
    pub fn page<T>(&self, mut rows: Vec<T>, cursor: impl Fn(&T) -> String) -> List<T> {
        let has_more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_after = if has_more {
            rows.last().map(cursor)
        } else {
            None
        };
        List {
            data: rows,
            has_more,
            next_after,
        }
    }
}

/// The query string as `T` (whose fields are the list's parameters, unknown ones refused).
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid query: {e}")))
}

fn not_issued() -> ApiError {
    ApiError::InvalidRequest("after is not a cursor from this list".into())
}

/// The cursor of a list keyed by row id: an id as the engine writes it.
pub fn id_cursor(after: Option<&str>) -> Result<Option<i64>, ApiError> {
    after
        .map(|text| canonical_id(text).ok_or_else(not_issued))
        .transpose()
}

/// The cursor of the order list: an order number as the engine makes them
/// (`domain::order::new_order_no`: a UUIDv7 in lowercase hex without hyphens).
pub fn order_no_cursor(after: Option<&str>) -> Result<Option<String>, ApiError> {
    after
        .map(|text| {
            uuid::Uuid::try_parse(text)
                .ok()
                .filter(|id| {
                    id.get_version_num() == 7
                        && id.get_variant() == uuid::Variant::RFC4122
                        && id.simple().to_string() == text
                })
                .map(|_| text.to_string())
                .ok_or_else(not_issued)
        })
        .transpose()
}

/// The parameters of a list with no filter: `limit`, and `after`, a row id it issued.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageOnly {
    /// 1-100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_after` of the page before.
    after: Option<String>,
}

impl PageOnly {
    /// The page asked for, and the id it starts after.
    pub fn parse(req: &HttpRequest) -> Result<(Paging, Option<i64>), ApiError> {
        let page: PageOnly = query(req)?;
        Ok((
            Paging::parse(page.limit.as_deref())?,
            id_cursor(page.after.as_deref())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_list_takes_the_order_numbers_the_engine_makes() {
        for at in [
            "1970-01-01T00:00:00Z",
            "2026-11-26T12:00:00.123Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let at = crate::domain::time::parse(at).unwrap();
            let no = crate::domain::order::new_order_no(&at).0;
            assert_eq!(order_no_cursor(Some(&no)).unwrap(), Some(no.clone()));
        }
        let no = crate::domain::order::new_order_no(&crate::domain::time::now()).0;
        for bad in [
            no.to_uppercase(),
            uuid::Uuid::try_parse(&no).unwrap().hyphenated().to_string(),
            uuid::Uuid::new_v4().simple().to_string(),
            format!("{no}0"),
            no[1..].to_string(),
            "garbage".to_string(),
            String::new(),
        ] {
            assert!(order_no_cursor(Some(&bad)).is_err(), "{bad:?}");
        }
        assert_eq!(order_no_cursor(None).unwrap(), None);
    }

    #[test]
    fn limits_and_id_cursors_are_canonical() {
        assert_eq!(Paging::parse(None).unwrap().limit, 50);
        assert_eq!(Paging::parse(Some("1")).unwrap().limit, 1);
        assert_eq!(Paging::parse(Some("100")).unwrap().limit, 100);
        for bad in ["0", "101", "+5", "05", "-1", "", "x", "5.0"] {
            assert!(Paging::parse(Some(bad)).is_err(), "limit {bad:?}");
        }
        assert_eq!(id_cursor(Some("7")).unwrap(), Some(7));
        for bad in ["0", "-1", "+1", "01", "", "x", "9223372036854775808"] {
            assert!(id_cursor(Some(bad)).is_err(), "after {bad:?}");
        }
    }
}
