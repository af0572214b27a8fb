namespace Kestrel.Transport.IoUring.Transport;

internal sealed partial class FlushingThreadScheduler
{
    /// <summary>
    /// A connection's <see cref="FlushSendMode"/>, changed only by the transitions below, with what each mode needs to
    /// decide: the work item of the last inline send (AtOnce) and the deferred sends since the switch (Deferred).
    /// Flushing thread only: the output pipe has one writer at a time.
    /// </summary>
    private struct SendModeState
    {
        private int _deferredSinceSwitch;
        private InlineSendMark _lastInlineSend;

        public FlushSendMode Mode { get; private set; } // AtOnce first: a connection's first flush sends at once

        /// <summary>
        /// Deferred → AtOnce once <see cref="DeferredSendsBeforeRetry"/> sends in a row were deferred (a retry for one
        /// work item); true if this flush may send at once. Without the retry, one work item with two flushes would
        /// decide for the connection's whole life: a TLS connection's first request can share its work item with the
        /// end of the handshake (the session tickets are a flush of their own), and its single responses would then
        /// each wait for the end of their work item, queued behind whatever the pool had queued before.
        /// </summary>
        public bool TryAtOnce()
        {
            if (Mode == FlushSendMode.AtOnce)
            {
                return true;
            }
            if (++_deferredSinceSwitch < DeferredSendsBeforeRetry)
            {
                return false;
            }
            Mode = FlushSendMode.AtOnce;
            return true;
        }

        /// <summary>
        /// In AtOnce: notes an inline send in <paramref name="current"/>; false if that is the second of its work item,
        /// with nothing received since (then the caller defers). Bytes that arrived after the last send answer it (a
        /// client that waits for each response): their response starts a new exchange, not a second one written in
        /// the same go, even when the work item read them at once because they were already there when it looked.
        /// </summary>
        public bool TryInlineSend(in InlineSendMark current)
        {
            System.Diagnostics.Debug.Assert(Mode == FlushSendMode.AtOnce);
            if (current.Equals(_lastInlineSend))
            {
                return false;
            }
            _lastInlineSend = current;
            return true;
        }

        /// <summary>This flush defers: AtOnce → Deferred (the count starts again), or Deferred stays.</summary>
        public void OnDeferred()
        {
            if (Mode == FlushSendMode.AtOnce)
            {
                Mode = FlushSendMode.Deferred;
                _deferredSinceSwitch = 0;
            }
        }
    }

    /// <summary>Where an inline send happened: the pool thread's boundary, its work item's number, and the input flushes seen by then.</summary>
    private readonly record struct InlineSendMark(WorkItemBoundary? Boundary, long WorkItem, int InputFlushes);
}

/// <summary>When a connection's flush on a pool thread sends (see <see cref="FlushingThreadScheduler"/>).</summary>
internal enum FlushSendMode
{
    /// <summary>At once, inline in the flush: one flush per work item (request, response, next request).</summary>
    AtOnce,

    /// <summary>From the pool's global queue, with every flush made before a worker takes it: several responses per work item.</summary>
    Deferred,
}
