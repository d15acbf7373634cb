//! The AWS client of a Kinesis source, and what its errors mean for a reader: which are retried
//! after a back-off (throttling, limits, an endpoint that does not answer), which need a new
//! shard iterator (expired), and the words the receiver row shows.

use std::time::Duration;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::KinesisSourceConfig;

/// Back-off after a failed call, doubling up to [`RETRY_MAX`].
pub(super) const RETRY_MIN: Duration = Duration::from_millis(200);
pub(super) const RETRY_MAX: Duration = Duration::from_secs(10);

/// The region when neither the config nor the AWS configuration chain names one (Spark's
/// default too).
const FALLBACK_REGION: &str = "us-east-1";

/// A client for the source's region and endpoint, credentials from the AWS chain (environment,
/// profile, web identity, container or instance role).
pub(super) async fn connect(config: &KinesisSourceConfig) -> aws_sdk_kinesis::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&shared);
    if shared.region().is_none() {
        tracing::info!(source = %config.name, "no AWS region configured; using {FALLBACK_REGION}");
        builder = builder.region(aws_config::Region::new(FALLBACK_REGION));
    }
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_kinesis::Client::from_conf(builder.build())
}

/// What a failed call means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The shard's read throughput (or the account's call rate) is exceeded: back off.
    Throttled(String),
    /// The shard iterator is too old: get a new one at the same place.
    Expired(String),
    /// The stream or shard does not exist (yet): back off and look again.
    Missing(String),
    /// Anything else (the endpoint cannot be reached, credentials, a server error): back off.
    Other(String),
}

impl Failure {
    /// Classifies an SDK error by its service error code.
    pub(super) fn of<E, R>(err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        // A service error by its code and message; anything else (dispatch, timeout) with its
        // causes.
        let text = match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            (None, _) => DisplayErrorContext(err).to_string(),
        };
        match err.code() {
            Some("ProvisionedThroughputExceededException" | "LimitExceededException" | "ThrottlingException") => {
                Self::Throttled(text)
            }
            Some("ExpiredIteratorException") => Self::Expired(text),
            Some("ResourceNotFoundException") => Self::Missing(text),
            _ => Self::Other(text),
        }
    }

    /// The words for the receiver row and the log.
    pub(super) fn describe(&self) -> &str {
        match self {
            Self::Throttled(text) | Self::Expired(text) | Self::Missing(text) | Self::Other(text) => text,
        }
    }
}
