//! Where a request's preparation (tokenization, chat-template rendering) runs. It is CPU work that must not
//! hold an async worker for long, but for the usual small request (often all cached tokenizations) the
//! hand-off to tokio's blocking pool costs more than the work itself.

use crate::engine::ScoreError;

/// Request bodies up to this size are prepared on the async runtime.
const INLINE_PREPARE_BYTES: usize = 16 << 10;

/// Runs `work` in the handler when the request body was small, on the blocking pool otherwise.
pub async fn prepare_where_cheapest<T, F>(body_bytes: usize, work: F) -> Result<T, ScoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ScoreError> + Send + 'static,
{
    if body_bytes <= INLINE_PREPARE_BYTES {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ScoreError::Internal(format!("tokenizer task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_of_work() -> Result<std::thread::ThreadId, ScoreError> {
        Ok(std::thread::current().id())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn small_requests_run_inline_and_large_ones_on_the_blocking_pool() {
        let here = std::thread::current().id();
        assert_eq!(
            prepare_where_cheapest(100, thread_of_work).await.unwrap(),
            here
        );
        let large = INLINE_PREPARE_BYTES + 1;
        assert_ne!(
            prepare_where_cheapest(large, thread_of_work).await.unwrap(),
            here
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn errors_come_back_unchanged_on_both_paths() {
        for bytes in [0, 1 << 20] {
            let r: Result<(), _> =
                prepare_where_cheapest(bytes, || Err(ScoreError::Internal("x".into()))).await;
            assert!(matches!(r, Err(ScoreError::Internal(m)) if m == "x"));
        }
    }
}
