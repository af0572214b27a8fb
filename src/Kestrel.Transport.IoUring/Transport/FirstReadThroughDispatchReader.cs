using System.IO.Pipelines;
using System.Runtime.CompilerServices;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The application's end of a connection's input pipe in the default scheduling mode. Its first read always resumes
/// through the ring's <see cref="ApplicationDispatch"/>, even when the request is already in the pipe; every later
/// call goes straight to the pipe.
/// <para>
/// Why: Kestrel starts each connection in a thread-pool work item of its own, which reads at once. Were the first
/// request already there, it would run inside that work item, in the pool's first-in first-out queue, out of the
/// dispatch's sight: a burst of new connections whose handlers block would hold back everything queued after it,
/// quick keep-alive requests included. Through the dispatch, first requests take their turn as
/// <see cref="ConnectionRunHistory.New"/> work, after quick connections and before slow ones. It costs one hand-off
/// per connection.
/// </para>
/// </summary>
internal sealed class FirstReadThroughDispatchReader(PipeReader pipe, DispatchedConnectionScheduler scheduler) : PipeReader
{
    private bool _firstReadDone; // the reader's own state: a pipe has one reader at a time

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (_firstReadDone)
        {
            return pipe.ReadAsync(cancellationToken);
        }
        _firstReadDone = true;
        return FirstReadAsync(cancellationToken);
    }

    protected override ValueTask<ReadResult> ReadAtLeastAsyncCore(int minimumSize, CancellationToken cancellationToken)
    {
        if (_firstReadDone)
        {
            return pipe.ReadAtLeastAsync(minimumSize, cancellationToken);
        }
        _firstReadDone = true;
        return FirstReadAtLeastAsync(minimumSize, cancellationToken);
    }

    private async ValueTask<ReadResult> FirstReadAsync(CancellationToken cancellationToken)
    {
        await new ResumeThroughDispatch(scheduler);
        return await pipe.ReadAsync(cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask<ReadResult> FirstReadAtLeastAsync(int minimumSize, CancellationToken cancellationToken)
    {
        await new ResumeThroughDispatch(scheduler);
        return await pipe.ReadAtLeastAsync(minimumSize, cancellationToken).ConfigureAwait(false);
    }

    public override bool TryRead(out ReadResult result)
    {
        _firstReadDone = true; // a reader that polls has already taken its turn
        return pipe.TryRead(out result);
    }

    public override void AdvanceTo(SequencePosition consumed) => pipe.AdvanceTo(consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => pipe.AdvanceTo(consumed, examined);

    public override void CancelPendingRead() => pipe.CancelPendingRead();

    public override void Complete(Exception? exception = null) => pipe.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => pipe.CompleteAsync(exception);

    public override Task CopyToAsync(PipeWriter destination, CancellationToken cancellationToken = default)
    {
        _firstReadDone = true;
        return pipe.CopyToAsync(destination, cancellationToken);
    }

    public override Task CopyToAsync(Stream destination, CancellationToken cancellationToken = default)
    {
        _firstReadDone = true;
        return pipe.CopyToAsync(destination, cancellationToken);
    }

    /// <summary>An await that always suspends and resumes as the connection's next dispatched continuation.</summary>
    private readonly struct ResumeThroughDispatch(DispatchedConnectionScheduler scheduler) : ICriticalNotifyCompletion
    {
        private static readonly Action<object?> s_resume = static continuation => ((Action)continuation!)();

        public ResumeThroughDispatch GetAwaiter() => this;

        public bool IsCompleted => false;

        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation)
        {
            ExecutionContext? context = ExecutionContext.Capture();
            scheduler.Schedule(s_resume, context is null ? continuation : () => ExecutionContext.Run(context, static c => ((Action)c!)(), continuation));
        }

        public void UnsafeOnCompleted(Action continuation) => scheduler.Schedule(s_resume, continuation);
    }
}
