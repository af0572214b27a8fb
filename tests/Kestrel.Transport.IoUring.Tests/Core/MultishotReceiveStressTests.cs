using System.Net.Sockets;
using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>
/// Multishot recv under stress: thousands of messages with buffers recycled, a buffer ring far too small (ENOBUFS),
/// and a completion queue far too small (the multishot ends when the CQ is full). In every case the re-armed receive
/// must deliver every byte, in order: the SHA-256 of what was sent equals that of what was received.
/// </summary>
[Collection(CoreSerialCollection.Name)]
public sealed unsafe class MultishotReceiveStressTests(ITestOutputHelper output)
{
    private sealed record Outcome(string SentHash, string ReceivedHash, long Bytes, int Terminations, int NoBuffers, bool SawOverflow, int[] BufferUses)
    {
        public override string ToString() => $"bytes={Bytes} terminations={Terminations} ENOBUFS={NoBuffers} overflow={SawOverflow} hashes equal={SentHash == ReceivedHash} least-used buffer={BufferUses.Min()} uses";
    }

    /// <summary>
    /// A sender thread writes <paramref name="messages"/> random-size messages; the ring receives them all. The receive
    /// is armed once the sender has written <paramref name="armAfterSentBytes"/> bytes (or all of them), so that that
    /// much is already waiting in the socket when the first receive runs.
    /// </summary>
    private static Outcome Run(RingHarness h, ProvidedBufferRing buffers, int messages, int maxMessage, long armAfterSentBytes = 0)
    {
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        using var files = new FixedFileTable(h.Ring, 2);
        int slot = files.Install(Loopback.Fd(server));

        var sizes = new int[messages];
        var rng = new Random(1234);
        for (int i = 0; i < messages; i++) sizes[i] = rng.Next(1, maxMessage + 1);
        long total = sizes.Sum(s => (long)s);

        string sentHash = "";
        Exception? senderError = null;
        using var sentEnoughToArm = new ManualResetEventSlim(armAfterSentBytes == 0);
        var sender = new Thread(() =>
        {
            try
            {
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                var data = new byte[maxMessage];
                var local = new Random(99);
                long sent = 0;
                foreach (int size in sizes)
                {
                    local.NextBytes(data.AsSpan(0, size));
                    hash.AppendData(data, 0, size);
                    client.Send(data, 0, size, SocketFlags.None);
                    if ((sent += size) >= armAfterSentBytes)
                    {
                        sentEnoughToArm.Set();
                    }
                }
                sentHash = Convert.ToHexString(hash.GetHashAndReset());
            }
            catch (Exception e)
            {
                senderError = e; // reported by the test thread; an unhandled exception here would kill the test host
            }
            finally
            {
                sentEnoughToArm.Set();
            }
        });
        sender.Start();
        try
        {
            using var received = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            Assert.True(sentEnoughToArm.Wait(TimeSpan.FromSeconds(30)), "the sender never wrote enough to arm the receive");
            ulong ud = UserData.Encode(OperationKind.Receive, 0, slot);
            SqePreparation.PrepareMultishotReceive(h.Sqe(), slot, true, buffers.GroupId, ud);
            long got = 0;
            var bufferUses = new int[buffers.EntryCount];
            int terminations = 0, noBuffers = 0;
            bool overflow = false;
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (got < total)
            {
                Assert.True(DateTime.UtcNow < deadline, $"stalled at {got} of {total} bytes");
                overflow |= h.Ring.HasOverflowedCompletions;
                var cqe = h.WaitFor(ud);
                if (cqe.Result > 0)
                {
                    received.AppendData(buffers.Received(cqe.BufferId, cqe.Result));
                    bufferUses[cqe.BufferId]++;
                    buffers.Release(cqe.BufferId, cqe.Result, (cqe.Flags & CqeFlags.BufferMore) != 0);
                    got += cqe.Result;
                }
                else if (cqe.Result == -Errno.ENOBUFS)
                {
                    noBuffers++;
                }
                else
                {
                    Assert.Fail($"unexpected receive result {Errno.Name(cqe.Result)} after {got} bytes");
                }
                buffers.Publish();
                if (!cqe.HasMore)
                {
                    terminations++;
                    SqePreparation.PrepareMultishotReceive(h.Sqe(), slot, true, buffers.GroupId, ud); // re-arm
                }
            }
            Assert.True(sender.Join(TimeSpan.FromSeconds(30)));
            SqePreparation.PrepareCancel(h.Sqe(), ud, UserData.Encode(OperationKind.Cancel, 0, 0));
            h.WaitFor(c => c.UserData == ud && !c.HasMore);
            files.Remove(slot);
            Assert.Null(senderError);
            return new Outcome(sentHash, Convert.ToHexString(received.GetHashAndReset()), got, terminations, noBuffers, overflow, bufferUses);
        }
        finally
        {
            if (!sender.Join(0))
            {
                client.Dispose(); // a failed receive side: end the sender's blocking Send before the sockets go away
                sender.Join(TimeSpan.FromSeconds(30));
            }
        }
    }

    [Fact]
    public void ThousandsOfMessagesWithRecycledBuffersArriveIntact()
    {
        using var h = new RingHarness(sqEntries: 64, cqEntries: 1024);
        using var buffers = new ProvidedBufferRing(h.Ring, 5, entryCount: 64, bufferSize: 16 * 1024);
        var outcome = Run(h, buffers, messages: 5000, maxMessage: 8 * 1024);
        output.WriteLine(outcome.ToString());
        Assert.Equal(outcome.SentHash, outcome.ReceivedHash);
        Assert.True(outcome.Bytes > 15_000_000);
        Assert.All(outcome.BufferUses, uses => Assert.True(uses > 1, "a buffer was used once and never came back"));
    }

    [Fact]
    public void ATinyBufferRingRunsDryAndTheReArmedReceiveLosesNothing()
    {
        using var h = new RingHarness(sqEntries: 64, cqEntries: 1024);
        using var buffers = new ProvidedBufferRing(h.Ring, 6, entryCount: 2, bufferSize: 64);
        var outcome = Run(h, buffers, messages: 2000, maxMessage: 2048);
        output.WriteLine(outcome.ToString());
        Assert.True(outcome.NoBuffers > 0, "two 64-byte buffers must run out (ENOBUFS)");
        Assert.All(outcome.BufferUses, uses => Assert.True(uses > 100, "a buffer was not recycled"));
        Assert.True(outcome.Terminations >= outcome.NoBuffers);
        Assert.Equal(outcome.SentHash, outcome.ReceivedHash);
    }

    [Fact]
    public void ACompletionQueueTooSmallForTheBurstEndsTheMultishotAndReArmingRecovers()
    {
        // CQ of 8 entries for a stream of 1-4 KiB buffers: whenever the CQ fills up, the multishot recv posts its
        // last CQE (no F_MORE) into the overflow list and stops; it must be seen and re-armed. How often the CQ fills
        // later depends on how fast this thread reaps; the first times are made certain: the receive is armed with
        // 64 KiB already waiting, 64 buffers' worth, and every re-arm meets a drained CQ of 8 with more still waiting.
        using var h = new RingHarness(sqEntries: 4, cqEntries: 8);
        using var buffers = new ProvidedBufferRing(h.Ring, 7, entryCount: 256, bufferSize: 1024);
        var outcome = Run(h, buffers, messages: 3000, maxMessage: 4096, armAfterSentBytes: 64 * 1024);
        output.WriteLine(outcome.ToString());
        Assert.True(outcome.Terminations - outcome.NoBuffers > 1, "the multishot never ended although the CQ was far too small");
        Assert.Equal(outcome.SentHash, outcome.ReceivedHash);
    }

    [Fact]
    public void IncrementalBuffersPackSeveralReceivesIntoOneBuffer()
    {
        using var h = new RingHarness(sqEntries: 64, cqEntries: 1024);
        using var buffers = new ProvidedBufferRing(h.Ring, 8, entryCount: 8, bufferSize: 64 * 1024, incremental: true);
        Assert.True(buffers.IsIncremental);
        var outcome = Run(h, buffers, messages: 3000, maxMessage: 3000);
        output.WriteLine(outcome.ToString());
        Assert.Equal(outcome.SentHash, outcome.ReceivedHash);
    }
}
