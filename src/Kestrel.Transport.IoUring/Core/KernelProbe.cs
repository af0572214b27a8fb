using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>
/// Asks this kernel, by trying, which io_uring setup flags, opcodes and buffer-ring modes it accepts. Never parses
/// the kernel version. Each probe creates and closes a tiny ring on the calling thread.
/// </summary>
internal static unsafe class KernelProbe
{
    /// <summary>io_uring_setup with <paramref name="flags"/>; returns 0 when accepted, else -errno.</summary>
    public static int TrySetupFlags(SetupFlags flags)
    {
        RingOptions options = new() { SubmissionQueueEntries = 4, CompletionQueueEntries = 0, Flags = flags, SqThreadIdleMilliseconds = 10 };
        int fd = Ring.TrySetup(options, out _);
        if (fd < 0)
        {
            return fd;
        }
        LinuxSyscalls.Close(fd);
        return 0;
    }

    /// <summary>The opcodes IORING_REGISTER_PROBE reports as supported; empty when the probe itself fails.</summary>
    public static HashSet<IoUringOpcode> SupportedOpcodes(Ring ring)
    {
        const int MaxOps = 256;
        nuint size = (nuint)(sizeof(IoUringProbe) + MaxOps * sizeof(IoUringProbeOp));
        byte* buffer = (byte*)NativeMemory.AllocZeroed(size);
        try
        {
            var result = new HashSet<IoUringOpcode>();
            if (ring.Register(RegisterOpcode.RegisterProbe, buffer, MaxOps) < 0)
            {
                return result;
            }
            IoUringProbe* probe = (IoUringProbe*)buffer;
            IoUringProbeOp* ops = (IoUringProbeOp*)(probe + 1);
            for (int i = 0; i < probe->OpsLength; i++)
            {
                if ((ops[i].Flags & IoUringValues.ProbeOpSupported) != 0)
                {
                    result.Add((IoUringOpcode)ops[i].Op);
                }
            }
            return result;
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }

    /// <summary>Registers and drops a small provided buffer ring; returns 0 or -errno.</summary>
    public static int TryBufferRing(Ring ring, bool incremental)
    {
        try
        {
            using var bufferRing = new ProvidedBufferRing(ring, groupId: 0x7FFF, entryCount: 2, bufferSize: 64, incremental);
            return 0;
        }
        catch (IoUringException e)
        {
            return -e.ErrorCode;
        }
    }

    /// <summary>The value of kernel.io_uring_disabled (0 enabled, 1 unprivileged blocked, 2 disabled), or null where absent.</summary>
    public static int? ReadIoUringDisabledSysctl()
    {
        try
        {
            return int.Parse(File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim());
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    public static string KernelRelease()
    {
        try
        {
            return File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "unknown";
        }
    }
}
