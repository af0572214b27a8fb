using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// The descriptor budget on the accept path: counting /proc/self/fd takes milliseconds with tens of thousands of
/// descriptors open, so accepting must never wait for a count (neither for a lock a count holds nor by counting on the
/// accepting ring thread), and an arm reads the limit once. Counts and limits come from seams that record where and
/// how often they run, and that can hold a count mid-way.
/// </summary>
public sealed class DescriptorBudgetTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    /// <summary>A count of the process's descriptors that a test can hold mid-way.</summary>
    private sealed class HeldCount(long processOpen)
    {
        private readonly ManualResetEventSlim _entered = new();
        private readonly ManualResetEventSlim _released = new(initialState: true);
        private long _processOpen = processOpen;

        public Func<RingThread?> Ring { get; set; } = () => null;
        public int Runs;
        public int RunsOnRingThread;

        public long Count()
        {
            Interlocked.Increment(ref Runs);
            if (Ring() is { IsOwnerThread: true })
            {
                Interlocked.Increment(ref RunsOnRingThread);
            }
            _entered.Set();
            _released.Wait();
            return Volatile.Read(ref _processOpen);
        }

        /// <summary>The next count finds <paramref name="processOpen"/> and stays in progress until <see cref="Release"/>.</summary>
        public void HoldNext(long processOpen)
        {
            Volatile.Write(ref _processOpen, processOpen);
            _entered.Reset();
            _released.Reset();
        }

        public void WaitUntilEntered() => Assert.True(_entered.Wait(Bound), "the count never started");

        public void Release() => _released.Set();
    }

    [Fact]
    public async Task AdmissionDoesNotWaitForACountInProgress()
    {
        const long Limit = 1000;
        var count = new HeldCount(processOpen: 500);
        var budget = new DescriptorBudget(16, limitSource: () => Limit, openCountSource: count.Count);
        Assert.Equal(Limit - 128 - 500, budget.Remaining);

        // Accepting on one thread hit EMFILE and forces a count, which is held mid-way (a slow /proc/self/fd).
        count.HoldNext(processOpen: 600);
        var forcing = Task.Factory.StartNew(() => budget.Refresh(forceCount: true), TaskCreationOptions.LongRunning);
        try
        {
            count.WaitUntilEntered();

            // Another ring's accept is admitted meanwhile, on the estimate the last count left.
            var admission = Task.Factory.StartNew(() =>
            {
                budget.Refresh();
                bool exhausted = budget.IsExhausted;
                budget.OnOpened();
                return (exhausted, budget.Remaining);
            }, TaskCreationOptions.LongRunning);
            Assert.True(admission.Wait(Bound), "an accept's admission waited for a count of /proc/self/fd in progress");
            Assert.False(admission.Result.exhausted);
            Assert.Equal(Limit - 128 - 500 - 1, admission.Result.Remaining);
        }
        finally
        {
            count.Release();
        }
        await forcing.WaitAsync(Bound);

        // Released, the count lands: 600 in the process, of which the new connection may or may not have been one.
        var deadline = DateTime.UtcNow + Bound;
        while (budget.Remaining != Limit - 128 - 600 - 1 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10); // the count lands on a thread of its own: nothing to await
        }
        Assert.Equal(Limit - 128 - 600 - 1, budget.Remaining);
    }

    /// <summary>
    /// A real ring accepting one connection at a time (the budget's headroom is under a backlog) close to the limit,
    /// where the process is counted every 250 ms: every connection's accept reads the limit once (its completion and
    /// re-arm share one refresh), no count ever runs on the ring thread, and a count held mid-way holds up no accept.
    /// </summary>
    [Fact]
    public async Task AcceptingReadsTheLimitOncePerArmAndNeverCountsOnTheRingThread()
    {
        const long Limit = 1000;
        int limitReads = 0;
        var count = new HeldCount(processOpen: 650); // headroom 222: one accept at a time, counted every 250 ms
        var budget = new DescriptorBudget(64, () => { Interlocked.Increment(ref limitReads); return Limit; }, count.Count);
        await using var harness = await AcceptingRing.StartAsync(budget);
        count.Ring = () => harness.Ring;

        // Connections one after another until the budget has asked for two counts while accepting.
        int countsBefore = Volatile.Read(ref count.Runs);
        int readsBefore = Volatile.Read(ref limitReads);
        int accepted = 0;
        var deadline = DateTime.UtcNow + Bound;
        while (Volatile.Read(ref count.Runs) < countsBefore + 2 && DateTime.UtcNow < deadline)
        {
            await harness.ConnectAndAcceptAsync();
            accepted++;
        }
        Assert.True(Volatile.Read(ref count.Runs) >= countsBefore + 2, $"no count was asked for in {accepted} accepts");
        Assert.Equal(0, Volatile.Read(ref count.RunsOnRingThread));
        int reads = Volatile.Read(ref limitReads) - readsBefore;
        Assert.True(reads <= accepted + 1, $"{reads} limit reads for {accepted} accepts (one per accept expected)");

        // A count held mid-way (a slow /proc/self/fd) holds up no accept. Once every count begun has landed, a
        // forced refresh asks for a new one.
        deadline = DateTime.UtcNow + Bound;
        while (budget.Counts != Volatile.Read(ref count.Runs) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10); // a count lands on a pool thread: nothing to await
        }
        count.HoldNext(processOpen: 650);
        try
        {
            budget.Refresh(forceCount: true);
            count.WaitUntilEntered();
            for (int i = 0; i < 5; i++)
            {
                await harness.ConnectAndAcceptAsync();
            }
        }
        finally
        {
            count.Release();
        }
        Assert.Equal(0, Volatile.Read(ref count.RunsOnRingThread));
    }

    /// <summary>One ring with one listener on 127.0.0.1, built on a given descriptor budget.</summary>
    private sealed class AcceptingRing : IAsyncDisposable
    {
        private readonly ServiceProvider _services;
        private readonly IoUringConnectionListener _listener;

        private AcceptingRing(ServiceProvider services, RingThread ring, IoUringConnectionListener listener)
        {
            _services = services;
            Ring = ring;
            _listener = listener;
        }

        public RingThread Ring { get; }

        public static async Task<AcceptingRing> StartAsync(DescriptorBudget budget)
        {
            var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
            var options = new IoUringTransportOptions { RingCount = 1, SubmissionQueueSize = 64, CompletionQueueSize = 256, ReceiveBufferCount = 16 };
            var context = new IoUringTransportContext(options, new IoUringTrace(NullLoggerFactory.Instance),
                new IoUringTransportMetrics(services.GetRequiredService<IMeterFactory>()), IoUringCapabilities.Current,
                memoryPoolFactory: null, budget);
            var ring = new RingThread(context, 0);
            await ring.StartAsync();
            var listener = new IoUringConnectionListener(context, [ring], new IPEndPoint(IPAddress.Loopback, 0));
            await listener.BindAsync();
            return new AcceptingRing(services, ring, listener);
        }

        /// <summary>Connects a client, takes the connection from the listener, and closes both.</summary>
        public async Task ConnectAndAcceptAsync()
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(_listener.EndPoint).WaitAsync(Bound);
            ConnectionContext? connection = await _listener.AcceptAsync().AsTask().WaitAsync(Bound);
            Assert.NotNull(connection);
            connection.Abort(new ConnectionAbortedException("test"));
            await connection.DisposeAsync().AsTask().WaitAsync(Bound);
        }

        public async ValueTask DisposeAsync()
        {
            await _listener.DisposeAsync();
            await Ring.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            await _services.DisposeAsync();
        }
    }
}
