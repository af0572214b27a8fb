using System.Buffers;
using System.Collections.Concurrent;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>Counts of every fault injected in one run, by name, for the report.</summary>
internal sealed class FaultCounts
{
    private readonly ConcurrentDictionary<string, long> _counts = new();

    public void Add(string fault) => _counts.AddOrUpdate(fault, 1, (_, n) => n + 1);

    public long Total => _counts.Values.Sum();

    public override string ToString() => _counts.IsEmpty ? "none" : string.Join(", ", _counts.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value}"));
}

/// <summary>
/// The chaos run's faults for one ring, each a sequence the kernel itself can produce, so that what the transport
/// sees is possible: a direct send that takes nothing (EAGAIN), part of the bytes, or fails (ECONNRESET, EPIPE) without
/// sending; an io_uring_enter that returns EINTR (retried), EAGAIN or EBUSY with nothing consumed; completions held
/// back for a turn or more, in order; a receive that the kernel ended anyway (no F_MORE, no buffer) reported as
/// ENOBUFS (re-armed) or ECONNRESET. Data-carrying completions are never rewritten: that would lose bytes the kernel
/// delivered, which no kernel does. After <see cref="Quiesce"/> nothing new is injected; held completions still go out.
/// </summary>
internal sealed class ChaosFaults(FaultPlan plan, int seed, FaultCounts counts) : IFaultInjector
{
    // Ring thread only.
    private readonly Random _ringRandom = new(seed);
    private readonly List<IoUringCqe> _held = new();

    // Flushing threads, many at once: guarded by its own lock.
    private readonly Random _sendRandom = new(seed ^ 0x5EED);

    private volatile bool _quiet;
    private bool _failNextEnter; // ring thread

    /// <summary>Ring thread: the next io_uring_enter fails with EINVAL, an error the loop cannot go on from.</summary>
    public bool FailNextEnter()
    {
        _failNextEnter = true;
        counts.Add("ring failure");
        return true;
    }

    public void Quiesce() => _quiet = true;

    private bool Roll(Random random, int perMille) => !_quiet && perMille > 0 && random.Next(1000) < perMille;

    public int BeforeEnter(ref uint minComplete)
    {
        if (_held.Count > 0)
        {
            minComplete = 0; // what is held must go out next turn: never sleep on it
        }
        if (_failNextEnter)
        {
            _failNextEnter = false;
            return -Errno.EINVAL;
        }
        if (!Roll(_ringRandom, plan.EnterPerMille))
        {
            return 0;
        }
        int errno = _ringRandom.Next(3) switch { 0 => Errno.EINTR, 1 => Errno.EAGAIN, _ => Errno.EBUSY };
        counts.Add($"enter {Errno.Name(errno)}");
        return -errno;
    }

    public int AfterReap(Span<IoUringCqe> completions, int count)
    {
        for (int i = 0; i < count; i++)
        {
            RewriteEndedReceive(ref completions[i]);
        }
        if (_held.Count == 0 && count > 0 && Roll(_ringRandom, plan.DelayPerMille))
        {
            _held.AddRange(completions[..count]);
            counts.Add("completions delayed");
            return 0;
        }
        if (_held.Count == 0)
        {
            return count;
        }
        // Release in order: what was held first, then what was reaped now; what does not fit waits for the next call.
        _held.AddRange(completions[..count]);
        int n = Math.Min(_held.Count, completions.Length);
        for (int i = 0; i < n; i++)
        {
            completions[i] = _held[i];
        }
        _held.RemoveRange(0, n);
        return n;
    }

    private void RewriteEndedReceive(ref IoUringCqe cqe)
    {
        if (UserData.KindOf(cqe.UserData) != OperationKind.Receive || cqe.HasMore || cqe.HasBuffer || !Roll(_ringRandom, plan.ReceiveEndPerMille))
        {
            return;
        }
        int errno = _ringRandom.Next(2) == 0 ? Errno.ENOBUFS : Errno.ECONNRESET;
        counts.Add($"receive ended {Errno.Name(errno)} (was {cqe.Result})");
        cqe.Result = -errno;
    }

    public int DirectSend(in ReadOnlySequence<byte> buffer, DirectSendCall send)
    {
        int choice, cut = 0;
        lock (_sendRandom)
        {
            if (!Roll(_sendRandom, plan.DirectSendPerMille))
            {
                choice = -1;
            }
            else
            {
                choice = _sendRandom.Next(4);
                cut = buffer.Length > 1 ? (int)_sendRandom.NextInt64(1, buffer.Length) : 0;
            }
        }
        switch (choice)
        {
            case 0:
                counts.Add("direct send EAGAIN");
                return 0;
            case 1 when cut > 0:
                counts.Add("direct send partial");
                return send(buffer.Slice(0, cut));
            case 2:
                counts.Add("direct send ECONNRESET");
                return -Errno.ECONNRESET;
            case 3:
                counts.Add("direct send EPIPE");
                return -Errno.EPIPE;
            default:
                return send(buffer);
        }
    }
}
