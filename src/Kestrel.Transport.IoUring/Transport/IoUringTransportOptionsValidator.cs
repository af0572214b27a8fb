using System.Numerics;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Rejects invalid <see cref="IoUringTransportOptions"/> at start-up, naming the option and the allowed range.</summary>
internal sealed class IoUringTransportOptionsValidator : IValidateOptions<IoUringTransportOptions>
{
    public ValidateOptionsResult Validate(string? name, IoUringTransportOptions o)
    {
        var errors = new List<string>();
        void Check(bool ok, string option, object? value, string rule)
        {
            if (!ok) errors.Add($"IoUringTransportOptions.{option} is {value ?? "null"}; {rule}.");
        }

        Check(o.RingCount is >= 1 and <= 256, nameof(o.RingCount), o.RingCount, "it must be between 1 and 256");
        Check(o.SubmissionQueueSize is >= 16 and <= 32768 && BitOperations.IsPow2(o.SubmissionQueueSize),
            nameof(o.SubmissionQueueSize), o.SubmissionQueueSize, "it must be a power of two from 16 to 32768");
        Check(o.CompletionQueueSize <= 65536 && BitOperations.IsPow2(o.CompletionQueueSize) && o.CompletionQueueSize >= 2 * o.SubmissionQueueSize,
            nameof(o.CompletionQueueSize), o.CompletionQueueSize, "it must be a power of two, at least twice SubmissionQueueSize and at most 65536");
        Check(o.ReceiveBufferCount is >= 1 and <= 32768 && BitOperations.IsPow2(o.ReceiveBufferCount),
            nameof(o.ReceiveBufferCount), o.ReceiveBufferCount, "it must be a power of two from 1 to 32768");
        Check(o.ReceiveBufferSize is >= 256 and <= 1024 * 1024, nameof(o.ReceiveBufferSize), o.ReceiveBufferSize, "it must be from 256 to 1048576 bytes");
        Check(o.FixedFileSlots is >= 1 and <= 1 << 20, nameof(o.FixedFileSlots), o.FixedFileSlots, "it must be from 1 to 1048576");
        Check(o.MaxReadBufferSize is null or >= 0, nameof(o.MaxReadBufferSize), o.MaxReadBufferSize, "it must be null or at least 0");
        Check(o.MaxWriteBufferSize is null or >= 0, nameof(o.MaxWriteBufferSize), o.MaxWriteBufferSize, "it must be null or at least 0");
        Check(o.Backlog >= 1, nameof(o.Backlog), o.Backlog, "it must be at least 1");
        Check(o.ZeroCopySendThreshold >= 0, nameof(o.ZeroCopySendThreshold), o.ZeroCopySendThreshold, "it must be 0 (off) or a positive byte count");
        Check(o.SqPollIdleMilliseconds is >= 0 and <= 600_000, nameof(o.SqPollIdleMilliseconds), o.SqPollIdleMilliseconds, "it must be from 0 to 600000");
        Check(o.SqPollCpu >= -1, nameof(o.SqPollCpu), o.SqPollCpu, "it must be -1 (unpinned) or a CPU number");
        Check(o.RegisteredSendBufferSize == 0 || o.RegisteredSendBufferSize is >= 64 * 1024 and <= 1 << 30,
            nameof(o.RegisteredSendBufferSize), o.RegisteredSendBufferSize, "it must be 0 (off) or from 65536 to 1073741824 bytes");
        Check(Enum.IsDefined(o.ApplicationScheduling), nameof(o.ApplicationScheduling), o.ApplicationScheduling, "it must be ThreadPool or Inline");
        Check(Enum.IsDefined(o.SendPath), nameof(o.SendPath), o.SendPath, "it must be Direct or Ring");
        Check(Enum.IsDefined(o.WhenUnavailable), nameof(o.WhenUnavailable), o.WhenUnavailable, "it must be FallBackToSockets or Throw");

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
