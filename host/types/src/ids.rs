//! Identifiers shaped like Flink's (32 lowercase hex characters).

use std::fmt;
use std::str::FromStr;

/// A job's id: 16 bytes, written as 32 lowercase hex characters as in Flink.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct JobId(pub [u8; 16]);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// A string that is not a valid id.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a valid id: expected 32 lowercase hex characters")]
pub struct ParseIdError(pub String);

impl FromStr for JobId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ParseIdError(s.to_owned()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_owned()))?;
        Ok(JobId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_malformed_text() {
        let id = JobId([0xab; 16]);
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<JobId>().expect("valid"), id);
        for bad in [
            "abc",
            "ABABABABABABABABABABABABABABABAB",
            "zz00000000000000000000000000000000",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }
}
