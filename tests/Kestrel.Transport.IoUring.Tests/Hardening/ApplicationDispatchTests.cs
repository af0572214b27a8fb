using System.IO.Pipelines;
using System.Text;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// The order in which <see cref="ApplicationDispatch"/> runs application work, its bound on the pool's queue, and that
/// it neither loses nor repeats a continuation. The thread pool is stood in for by a queue the test drains, so every
/// order is exact; the last test uses the real pool.
/// </summary>
public sealed class ApplicationDispatchTests
{
    private readonly Queue<IThreadPoolWorkItem> _pool = new();
    private readonly List<string> _ran = [];

    private ApplicationDispatch NewDispatch(int maxQueuedItems = 2) => new(maxQueuedItems, _pool.Enqueue);

    private static DispatchedConnectionScheduler Connection(ApplicationDispatch dispatch, ConnectionRunHistory history)
    {
        var connection = dispatch.CreateScheduler();
        connection.LastRun = history;
        return connection;
    }

    private void Schedule(DispatchedConnectionScheduler connection, string name) =>
        connection.Schedule(static state => { var (ran, n) = ((List<string>, string))state!; ran.Add(n); }, (_ran, name));

    private void DrainPool()
    {
        while (_pool.TryDequeue(out var item))
        {
            item.Execute();
        }
    }

    [Fact]
    public void QuickConnectionsRunFirstThenNewOnesThenSlowOnes()
    {
        var dispatch = NewDispatch();
        Schedule(Connection(dispatch, ConnectionRunHistory.Slow), "slow");
        Schedule(Connection(dispatch, ConnectionRunHistory.New), "new");
        Schedule(Connection(dispatch, ConnectionRunHistory.Quick), "quick");

        DrainPool();

        Assert.Equal(["quick", "new", "slow"], _ran);
        Assert.Equal((0, 0, 0), dispatch.Waiting);
    }

    [Fact]
    public void WhileThePoolKeepsUpEveryWaitingContinuationHasAWorkItemInItsQueue()
    {
        var dispatch = NewDispatch(maxQueuedItems: 2);
        var connection = Connection(dispatch, ConnectionRunHistory.Quick);
        for (int i = 0; i < 10; i++)
        {
            Schedule(connection, $"c{i}");
        }

        Assert.False(dispatch.BackedUp);
        Assert.Equal(10, _pool.Count);
        Assert.Equal(10, dispatch.QueuedItems);
        DrainPool();
        Assert.Equal(10, _ran.Count);
        Assert.Equal(0, dispatch.QueuedItems);
    }

    [Fact]
    public void OnceContinuationsHaveWaitedLongTheQueueHoldsAtMostTheBoundAndNothingIsLeftBehind()
    {
        var dispatch = NewDispatch(maxQueuedItems: 2);
        var connection = Connection(dispatch, ConnectionRunHistory.Quick);
        for (int i = 0; i < 10; i++)
        {
            Schedule(connection, $"c{i}"); // one item each: nothing has waited yet
        }
        // The wait is the condition under test: continuations that waited BackedUpWait before a pool thread took them.
        Thread.Sleep(ApplicationDispatch.BackedUpWait + TimeSpan.FromMilliseconds(10));
        _pool.Dequeue().Execute();
        Assert.True(dispatch.BackedUp);

        for (int i = 10; i < 20; i++)
        {
            Schedule(connection, $"c{i}");
        }
        Assert.Equal(9, _pool.Count); // no item for the ten new ones: nine are already queued
        for (int i = 0; i < 8; i++)
        {
            _pool.Dequeue().Execute(); // each runs one that waited, and queues no successor above the bound
        }
        Assert.True(dispatch.BackedUp);
        Assert.Equal(2, _pool.Count); // the bound, with 11 continuations waiting
        Assert.Equal(2, dispatch.QueuedItems);
        Assert.Equal((11, 0, 0), dispatch.Waiting);

        DrainPool(); // each item queues its successor while more wait: every continuation runs, each once
        Assert.Equal(20, _ran.Count);
        Assert.Equal(20, _ran.Distinct().Count());
        Assert.Equal((0, 0, 0), dispatch.Waiting);
        Assert.Equal(0, dispatch.QueuedItems);
    }

    [Fact]
    public void ABandPassedOverSevenTimesTakesTheNextTurn()
    {
        var dispatch = NewDispatch();
        Schedule(Connection(dispatch, ConnectionRunHistory.Slow), "slow");
        var quick = Connection(dispatch, ConnectionRunHistory.Quick);
        for (int i = 0; i < 20; i++)
        {
            Schedule(quick, $"quick{i}");
        }

        DrainPool();

        Assert.Equal(ApplicationDispatch.PassOverLimit, _ran.IndexOf("slow"));
        Assert.Equal(21, _ran.Count);
    }

    [Fact]
    public void ARunThatHoldsItsThreadMarksTheConnectionSlowAndAQuickOneMarksItQuickAgain()
    {
        var dispatch = NewDispatch();
        var connection = dispatch.CreateScheduler();
        Assert.Equal(ConnectionRunHistory.New, connection.LastRun);

        // The sleep is the workload: a handler that holds its pool thread.
        connection.Schedule(static _ => Thread.Sleep(ApplicationDispatch.SlowRun + TimeSpan.FromMilliseconds(10)), null);
        DrainPool();
        Assert.Equal(ConnectionRunHistory.Slow, connection.LastRun);

        connection.Schedule(static _ => { }, null);
        DrainPool();
        Assert.Equal(ConnectionRunHistory.Quick, connection.LastRun);
    }

    [Fact]
    public async Task TheFirstReadResumesThroughTheDispatchEvenWithTheRequestAlreadyInThePipeLaterReadsDoNot()
    {
        var dispatch = NewDispatch();
        var scheduler = dispatch.CreateScheduler();
        var pipe = new Pipe(new PipeOptions(readerScheduler: scheduler, writerScheduler: PipeScheduler.Inline, useSynchronizationContext: false));
        var reader = new FirstReadThroughDispatchReader(pipe.Reader, scheduler);
        await pipe.Writer.WriteAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\n\r\n"));

        var first = reader.ReadAsync();
        Assert.False(first.IsCompleted);
        Assert.Equal((0, 1, 0), dispatch.Waiting); // filed as a new connection's work
        DrainPool();
        Assert.True(first.IsCompleted);
        var result = await first;
        Assert.Equal("GET / HTTP/1.1\r\n\r\n", Encoding.ASCII.GetString(result.Buffer));
        reader.AdvanceTo(result.Buffer.End);
        Assert.Equal(ConnectionRunHistory.Quick, scheduler.LastRun);

        await pipe.Writer.WriteAsync(Encoding.ASCII.GetBytes("more"));
        var second = reader.ReadAsync();
        Assert.True(second.IsCompleted); // straight from the pipe
        Assert.Empty(_pool);
        reader.AdvanceTo((await second).Buffer.End);
        reader.Complete();
        pipe.Writer.Complete();
    }

    [Fact]
    public void OnTheRealPoolEveryContinuationRunsExactlyOnce()
    {
        var dispatch = new ApplicationDispatch();
        const int Producers = 4, PerProducer = 20_000, Connections = 64;
        var connections = Enumerable.Range(0, Connections).Select(_ => dispatch.CreateScheduler()).ToArray();
        var runs = new int[Producers * PerProducer];
        using var allRan = new CountdownEvent(runs.Length);
        Action<object?> run = state =>
        {
            int id = (int)state!;
            Interlocked.Increment(ref runs[id]);
            if (id % 997 == 0)
            {
                Thread.Sleep(1); // a few hold their thread for a while, as handlers do
            }
            allRan.Signal();
        };

        var producers = Enumerable.Range(0, Producers).Select(p => new Thread(() =>
        {
            for (int i = 0; i < PerProducer; i++)
            {
                int id = p * PerProducer + i;
                var connection = connections[id % Connections];
                if (i % 5 == 0)
                {
                    connection.LastRun = (ConnectionRunHistory)(id % 3); // the bands fill and drain in a mix
                }
                connection.Schedule(run, id);
            }
        })).ToArray();
        foreach (var t in producers) t.Start();
        foreach (var t in producers) t.Join();

        Assert.True(allRan.Wait(TimeSpan.FromSeconds(60)), $"{allRan.CurrentCount} continuations never ran; waiting {dispatch.Waiting}, queued items {dispatch.QueuedItems}");
        Assert.All(runs, n => Assert.Equal(1, n));
        Assert.Equal((0, 0, 0), dispatch.Waiting);
    }
}
