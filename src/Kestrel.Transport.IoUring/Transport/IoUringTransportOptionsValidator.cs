using System.Numerics;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Rejects invalid <see cref="IoUringTransportOptions"/> when the host starts (ValidateOnStart), naming each option
/// both as a property and as its configuration key (e.g. "Kestrel:IoUring:RingCount"), its value and what to change.
/// </summary>
internal sealed class IoUringTransportOptionsValidator : IValidateOptions<IoUringTransportOptions>
{
    /// <summary>How an option is named in messages: the property and the configuration key.</summary>
    internal static string Describe(string option) => $"IoUringTransportOptions.{option} ({Microsoft.AspNetCore.Hosting.WebHostBuilderIoUringExtensions.ConfigurationSection}:{option})";

    public ValidateOptionsResult Validate(string? name, IoUringTransportOptions o)
    {
        // OptionsValidationException joins the failures with "; ", so a failure carries no final full stop.
        var errors = new List<string>();
        void Check(bool ok, string option, object? value, string rule)
        {
            if (!ok) errors.Add($"{Describe(option)} is {value ?? "null"}; {rule}");
        }

        Check(o.RingCount is >= 1 and <= 256, nameof(o.RingCount), o.RingCount, "it must be between 1 and 256");
        Check(o.SubmissionQueueSize is >= 16 and <= 32768 && BitOperations.IsPow2(o.SubmissionQueueSize),
            nameof(o.SubmissionQueueSize), o.SubmissionQueueSize, "it must be a power of two from 16 to 32768");
        Check(o.CompletionQueueSize is >= 32 and <= 65536 && BitOperations.IsPow2(o.CompletionQueueSize),
            nameof(o.CompletionQueueSize), o.CompletionQueueSize, "it must be a power of two from 32 to 65536");
        if (BitOperations.IsPow2(o.CompletionQueueSize) && BitOperations.IsPow2(o.SubmissionQueueSize)
            && o.CompletionQueueSize < 2 * o.SubmissionQueueSize)
        {
            // Both values are valid alone; the pair is not. Name both and say what either could become.
            int raisedCq = 2 * o.SubmissionQueueSize;
            errors.Add($"{Describe(nameof(o.CompletionQueueSize))} is {o.CompletionQueueSize} but must be at least twice "
                + $"{Describe(nameof(o.SubmissionQueueSize))}, which is {o.SubmissionQueueSize}: "
                + (raisedCq <= 65536 ? $"raise CompletionQueueSize to {raisedCq} or " : "")
                + $"lower SubmissionQueueSize to {Math.Max(o.CompletionQueueSize / 2, 1)}");
        }
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
        Check(o.CreateBoundListenSocket is not null, nameof(o.CreateBoundListenSocket), null, "set it to a function or leave the default, IoUringTransportOptions.CreateDefaultBoundListenSocket");
        Check(Enum.IsDefined(o.ApplicationScheduling), nameof(o.ApplicationScheduling), o.ApplicationScheduling, "it must be ThreadPool or Inline");
        Check(Enum.IsDefined(o.SendPath), nameof(o.SendPath), o.SendPath, "it must be Direct or Ring");
        Check(Enum.IsDefined(o.RingThreadPolicy), nameof(o.RingThreadPolicy), o.RingThreadPolicy, "it must be Batch or Normal");
        Check(Enum.IsDefined(o.WhenUnavailable), nameof(o.WhenUnavailable), o.WhenUnavailable, "it must be FallBackToSockets or Throw");

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
