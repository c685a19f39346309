//! Best final response, RFC 3261 section 16.7 step 6.

/// The best of the final responses received, in the order received:
/// any 6xx (the first one); else the lowest class present, preferring 486
/// in the 4xx class, else the first received of that class. `None` when
/// there are none. Codes are taken as given (503 included: see
/// [`caller_response`]).
pub fn best_response(codes: &[u16]) -> Option<u16> {
    if let Some(&c) = codes.iter().find(|&&c| (600..700).contains(&c)) {
        return Some(c);
    }
    let class = codes.iter().map(|c| c / 100).min()?;
    if class == 4 && codes.contains(&486) {
        return Some(486);
    }
    codes.iter().copied().find(|c| c / 100 == class)
}

/// The code to send to the caller for a best response: a 503 becomes 500
/// (a 503 upstream would mean the whole switch is unavailable).
pub fn caller_response(best: u16) -> u16 {
    if best == 503 {
        500
    } else {
        best
    }
}

/// A leg's final code as counted: 3xx are not followed by a B2BUA, so they
/// count as 480; anything outside 300..=699 is a fault, counted as 500.
pub(crate) fn normalize(code: u16) -> u16 {
    match code {
        300..=399 => 480,
        400..=699 => code,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_selection() {
        assert_eq!(best_response(&[]), None);
        assert_eq!(best_response(&[486, 486, 486]), Some(486));
        assert_eq!(best_response(&[404, 486, 503]), Some(486));
        assert_eq!(best_response(&[503, 404]), Some(404));
        assert_eq!(best_response(&[503]), Some(503));
        assert_eq!(caller_response(503), 500);
        assert_eq!(best_response(&[404, 603, 486]), Some(603));
        assert_eq!(best_response(&[502, 503]), Some(502));
        assert_eq!(best_response(&[480, 404]), Some(480));
        assert_eq!(best_response(&[408, 600, 603]), Some(600));
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize(302), 480);
        assert_eq!(normalize(200), 500);
        assert_eq!(normalize(486), 486);
        assert_eq!(normalize(700), 500);
    }
}
