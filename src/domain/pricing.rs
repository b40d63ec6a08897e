//! Where money is computed: the placement rules of SPEC §Business rules as pure functions —
//! the request's shape checks and the price quote. Money is integer cents; nothing is rounded.

use chrono::NaiveDateTime;

use super::ids::CourseId;

/// Most courses in one order.
pub const MAX_COURSES_PER_ORDER: usize = 20;

/// A request shape problem (400), in the SPEC's precedence order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("course_ids must not be empty")]
    NoCourses,
    #[error("course_ids may hold at most {MAX_COURSES_PER_ORDER} courses")]
    TooManyCourses,
    #[error("course {0} appears more than once in course_ids")]
    DuplicateCourse(CourseId),
    #[error("points must not be negative")]
    NegativePoints,
    #[error("points x cents_per_point overflows")]
    Overflow,
}

/// Checks what can be checked without the database.
pub fn check_shape(
    course_ids: &[CourseId],
    points: i64,
    cents_per_point: i64,
) -> Result<(), ShapeError> {
    if course_ids.is_empty() {
        return Err(ShapeError::NoCourses);
    }
    if course_ids.len() > MAX_COURSES_PER_ORDER {
        return Err(ShapeError::TooManyCourses);
    }
    for (i, id) in course_ids.iter().enumerate() {
        if course_ids[..i].contains(id) {
            return Err(ShapeError::DuplicateCourse(*id));
        }
    }
    if points < 0 {
        return Err(ShapeError::NegativePoints);
    }
    points
        .checked_mul(cents_per_point)
        .ok_or(ShapeError::Overflow)?;
    Ok(())
}

/// The terms of the coupon a user wants to spend.
#[derive(Debug, Clone)]
pub struct CouponTerms {
    pub discount_cents: i64,
    pub min_spend_cents: i64,
    pub valid_until: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub total_cents: i64,
    pub discount_cents: i64,
    pub points_used: i64,
    pub payable_cents: i64,
}

/// Why a quote was refused (422, in the SPEC's table order; `Overflow` is 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("the order total overflows")]
    Overflow,
    #[error("the coupon has expired")]
    CouponExpired,
    #[error("the order total is below the coupon's minimum spend")]
    MinSpendNotMet,
    #[error("the user does not have that many points")]
    InsufficientPoints,
    #[error("the points are worth more than the total after the coupon")]
    PointsExceedPayable,
}

/// Sums the prices, as cents; overflow is an error.
pub fn total(prices: &[i64]) -> Result<i64, QuoteError> {
    prices
        .iter()
        .try_fold(0i64, |sum, p| sum.checked_add(*p))
        .ok_or(QuoteError::Overflow)
}

/// `discount = min(coupon discount, total)`; `payable = total - discount - points x
/// cents_per_point`, with points allowed only while they fit in `total - discount`.
pub fn quote(
    total_cents: i64,
    coupon: Option<&CouponTerms>,
    points: i64,
    available_points: i64,
    cents_per_point: i64,
    now: NaiveDateTime,
) -> Result<Quote, QuoteError> {
    let points_cents = points
        .checked_mul(cents_per_point)
        .ok_or(QuoteError::Overflow)?;
    let discount_cents = match coupon {
        None => 0,
        Some(terms) => {
            if terms.valid_until.is_some_and(|until| now > until) {
                return Err(QuoteError::CouponExpired);
            }
            if total_cents < terms.min_spend_cents {
                return Err(QuoteError::MinSpendNotMet);
            }
            terms.discount_cents.min(total_cents)
        }
    };
    if points > available_points {
        return Err(QuoteError::InsufficientPoints);
    }
    let after_discount = total_cents - discount_cents;
    if points_cents > after_discount {
        return Err(QuoteError::PointsExceedPayable);
    }
    Ok(Quote {
        total_cents,
        discount_cents,
        points_used: points,
        payable_cents: after_discount - points_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse;

    fn ids(raw: &[i64]) -> Vec<CourseId> {
        raw.iter().copied().map(CourseId).collect()
    }

    fn now() -> NaiveDateTime {
        parse("2026-11-26T12:00:00Z").unwrap()
    }

    fn coupon(discount: i64, min_spend: i64, until: Option<&str>) -> CouponTerms {
        CouponTerms {
            discount_cents: discount,
            min_spend_cents: min_spend,
            valid_until: until.map(|u| parse(u).unwrap()),
        }
    }

    #[test]
    fn shape_checks_in_order() {
        assert_eq!(check_shape(&ids(&[]), 0, 1), Err(ShapeError::NoCourses));
        assert_eq!(
            check_shape(&ids(&[1; 21]), 0, 1),
            Err(ShapeError::TooManyCourses)
        );
        assert_eq!(
            check_shape(&ids(&[1, 2, 1]), 0, 1),
            Err(ShapeError::DuplicateCourse(CourseId(1)))
        );
        assert_eq!(
            check_shape(&ids(&[1]), -1, 1),
            Err(ShapeError::NegativePoints)
        );
        assert_eq!(
            check_shape(&ids(&[1]), i64::MAX, 2),
            Err(ShapeError::Overflow)
        );
        assert_eq!(
            check_shape(&ids(&(1..=20).collect::<Vec<_>>()), 5, 3),
            Ok(())
        );
    }

    #[test]
    fn discount_is_capped_at_the_total() {
        let q = quote(500, Some(&coupon(800, 0, None)), 0, 0, 1, now()).unwrap();
        assert_eq!((q.discount_cents, q.payable_cents), (500, 0));
    }

    #[test]
    fn points_are_worth_cents_per_point_and_must_fit() {
        let q = quote(1000, Some(&coupon(100, 0, None)), 300, 1000, 3, now()).unwrap();
        assert_eq!(q.payable_cents, 1000 - 100 - 900);
        assert_eq!(
            quote(1000, Some(&coupon(100, 0, None)), 301, 1000, 3, now()),
            Err(QuoteError::PointsExceedPayable)
        );
        assert_eq!(
            quote(1000, None, 50, 49, 1, now()),
            Err(QuoteError::InsufficientPoints)
        );
    }

    #[test]
    fn coupon_rules() {
        let at_deadline = coupon(100, 0, Some("2026-11-26T12:00:00Z"));
        assert!(quote(1000, Some(&at_deadline), 0, 0, 1, now()).is_ok());
        let expired = coupon(100, 0, Some("2026-11-26T11:59:59.999Z"));
        assert_eq!(
            quote(1000, Some(&expired), 0, 0, 1, now()),
            Err(QuoteError::CouponExpired)
        );
        assert_eq!(
            quote(999, Some(&coupon(100, 1000, None)), 0, 0, 1, now()),
            Err(QuoteError::MinSpendNotMet)
        );
        assert!(quote(1000, Some(&coupon(100, 1000, None)), 0, 0, 1, now()).is_ok());
    }

    #[test]
    fn totals_overflow() {
        assert_eq!(total(&[i64::MAX, 1]), Err(QuoteError::Overflow));
        assert_eq!(total(&[1, 2, 3]), Ok(6));
    }
}
