using BenchmarkDotNet.Attributes;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>
/// The ring's submit/reap path with NOPs: GetSqe + PrepareNop + SubmitAndWait + ReadCompletions, one SQE per
/// io_uring_enter and 32 per enter. The ring is SINGLE_ISSUER, so it is created in GlobalSetup on the thread that then
/// runs the benchmark (BenchmarkDotNet runs both on the same thread).
/// </summary>
[MemoryDiagnoser]
public unsafe class RingBenchmarks
{
    private const int Batch = 32;
    private Ring _ring = null!;
    private readonly IoUringCqe[] _cqes = new IoUringCqe[Batch];

    [GlobalSetup]
    public void Setup() => _ring = Ring.Create(new RingOptions { SubmissionQueueEntries = 256, CompletionQueueEntries = 4096 });

    [GlobalCleanup]
    public void Cleanup() => _ring.Dispose();

    /// <summary>One NOP per io_uring_enter: the floor cost of a submit + wait + reap round trip.</summary>
    [Benchmark(Baseline = true)]
    public int NopPerEnter()
    {
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareNop(sqe, UserData.Encode(OperationKind.Nop, 1, 7));
        _ring.SubmitAndWait(1);
        return _ring.ReadCompletions(_cqes.AsSpan(0, 1));
    }

    /// <summary>32 NOPs per io_uring_enter, reported per operation: what batching buys.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public int NopBatched32PerEnter()
    {
        for (int i = 0; i < Batch; i++)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareNop(sqe, UserData.Encode(OperationKind.Nop, 1, i));
        }
        _ring.SubmitAndWait(Batch);
        int reaped = 0;
        while (reaped < Batch)
        {
            int n = _ring.ReadCompletions(_cqes.AsSpan(0, Batch - reaped));
            if (n == 0)
            {
                _ring.SubmitAndWait(1);
            }
            reaped += n;
        }
        return reaped;
    }
}

/// <summary>Provided buffer ring recycling: the per-receive cost of handing a buffer back to the kernel.</summary>
[MemoryDiagnoser]
public class ProvidedBufferRingBenchmarks
{
    private Ring _ring = null!;
    private ProvidedBufferRing _buffers = null!;
    private ushort _next;

    [GlobalSetup]
    public void Setup()
    {
        _ring = Ring.Create(new RingOptions { SubmissionQueueEntries = 64, CompletionQueueEntries = 256 });
        _buffers = new ProvidedBufferRing(_ring, groupId: 0, entryCount: 1024, bufferSize: 4096);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _buffers.Dispose();
        _ring.Dispose();
    }

    /// <summary>One buffer recycled and published (a receive completion handled on its own).</summary>
    [Benchmark(Baseline = true)]
    public void RecycleAndPublish()
    {
        _buffers.MarkTaken();
        _buffers.Recycle(_next);
        _next = (ushort)((_next + 1) & 1023);
        _buffers.Publish();
    }

    /// <summary>32 buffers recycled, one publish (a batch of completions from one enter), per buffer.</summary>
    [Benchmark(OperationsPerInvoke = 32)]
    public void Recycle32ThenPublish()
    {
        for (int i = 0; i < 32; i++)
        {
            _buffers.MarkTaken();
            _buffers.Recycle(_next);
            _next = (ushort)((_next + 1) & 1023);
        }
        _buffers.Publish();
    }
}

/// <summary>user_data packing: kind | generation | slot, as decoded for every completion.</summary>
[MemoryDiagnoser]
public class UserDataBenchmarks
{
    private const int N = 1024;
    private readonly ulong[] _values = new ulong[N];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        for (int i = 0; i < N; i++)
        {
            _values[i] = UserData.Encode((OperationKind)random.Next(1, 12), (uint)random.Next(), random.Next(0, 65536));
        }
    }

    [Benchmark(OperationsPerInvoke = N)]
    public ulong Encode()
    {
        ulong acc = 0;
        for (int i = 0; i < N; i++)
        {
            acc ^= UserData.Encode(OperationKind.Receive, (uint)i, i);
        }
        return acc;
    }

    [Benchmark(OperationsPerInvoke = N)]
    public long Decode()
    {
        long acc = 0;
        ulong[] values = _values;
        for (int i = 0; i < values.Length; i++)
        {
            UserData d = UserData.Decode(values[i]);
            acc += (int)d.Kind + d.Generation + d.Slot;
        }
        return acc;
    }

    /// <summary>The dispatch path's field-by-field accessors (KindOf / SlotOf / GenerationOf).</summary>
    [Benchmark(OperationsPerInvoke = N)]
    public long DecodeFields()
    {
        long acc = 0;
        ulong[] values = _values;
        for (int i = 0; i < values.Length; i++)
        {
            ulong v = values[i];
            acc += (int)UserData.KindOf(v) + UserData.GenerationOf(v) + UserData.SlotOf(v);
        }
        return acc;
    }
}
