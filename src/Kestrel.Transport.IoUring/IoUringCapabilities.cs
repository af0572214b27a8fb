using System.Text;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring;

/// <summary>
/// What this kernel's io_uring offers, found by trying (never by parsing the kernel version), and, when the transport
/// cannot use it, the precise reason. <c>Console.WriteLine(IoUringCapabilities.Probe())</c> prints a report.
/// </summary>
public sealed class IoUringCapabilities
{
    private static readonly Lazy<IoUringCapabilities> s_current = new(() => Probe());

    private IoUringCapabilities() { }

    /// <summary>The capabilities of this machine, probed once per process.</summary>
    public static IoUringCapabilities Current => s_current.Value;

    /// <summary>True when the transport can run on this kernel: the ring flags, multishot operations and buffer rings it needs are there.</summary>
    public bool IsSupported { get; private set; }

    /// <summary>Why the transport cannot run here (null when <see cref="IsSupported"/>).</summary>
    public string? UnavailableReason { get; private set; }

    /// <summary>The errno io_uring_setup failed with (e.g. "EPERM"), or null.</summary>
    public string? SetupError { get; private set; }

    /// <summary>The kernel release, for reports only.</summary>
    public string KernelRelease { get; private set; } = "";

    /// <summary>The operating system, when it is not Linux (nothing was probed then).</summary>
    private string? _platform;

    /// <summary>kernel.io_uring_disabled (0, 1 or 2), or null where the sysctl does not exist.</summary>
    public int? IoUringDisabledSysctl { get; private set; }

    /// <summary>Setup flags the kernel accepted, by name (e.g. "DEFER_TASKRUN").</summary>
    public IReadOnlyList<string> SetupFlags { get; private set; } = [];

    /// <summary>IORING_FEAT_* bits the kernel reported, by name.</summary>
    public IReadOnlyList<string> Features { get; private set; } = [];

    /// <summary>Opcodes IORING_REGISTER_PROBE reports, by name.</summary>
    public IReadOnlyList<string> Opcodes { get; private set; } = [];

    /// <summary>Multishot accept (5.19), implied by a working DEFER_TASKRUN ring.</summary>
    public bool MultishotAccept { get; private set; }

    /// <summary>Multishot recv (6.0), likewise implied.</summary>
    public bool MultishotReceive { get; private set; }

    /// <summary>Provided buffer rings (IORING_REGISTER_PBUF_RING) register.</summary>
    public bool BufferRings { get; private set; }

    /// <summary>Incremental buffer consumption (IOU_PBUF_RING_INC, 6.12) registers.</summary>
    public bool IncrementalBufferRings { get; private set; }

    /// <summary>The kernel reports recv/send bundles (IORING_FEAT_RECVSEND_BUNDLE, 6.10).</summary>
    public bool ReceiveBundles { get; private set; }

    /// <summary>IORING_OP_SEND_ZC is supported.</summary>
    public bool SendZeroCopy { get; private set; }

    /// <summary>SQPOLL rings can be created by this process.</summary>
    public bool SqPoll { get; private set; }

    /// <summary>The ring fd can be registered (IORING_REGISTER_RING_FDS).</summary>
    public bool RegisteredRingFd { get; private set; }

    internal KernelFeatures KernelFeatureBits { get; private set; }
    internal Abi.SetupFlags AcceptedSetupFlags { get; private set; }

    /// <summary>Probes the kernel now.</summary>
    public static IoUringCapabilities Probe() => Probe(simulatedSetupErrno: null);

    /// <summary>
    /// Probes the kernel, or pretends io_uring_setup fails with <paramref name="simulatedSetupErrno"/>, or that the
    /// process runs on <paramref name="simulatedOperatingSystem"/> (test seams). Anywhere but Linux it makes no system
    /// call at all: the numbers would mean other calls there.
    /// </summary>
    internal static IoUringCapabilities Probe(int? simulatedSetupErrno, string? simulatedOperatingSystem = null)
    {
        if (Transport.PlatformSupport.WhyUnsupported(simulatedOperatingSystem) is { } notLinux)
        {
            return new IoUringCapabilities
            {
                _platform = simulatedOperatingSystem ?? System.Runtime.InteropServices.RuntimeInformation.OSDescription,
                UnavailableReason = notLinux,
            };
        }

        var caps = new IoUringCapabilities
        {
            KernelRelease = KernelProbe.KernelRelease(),
            IoUringDisabledSysctl = KernelProbe.ReadIoUringDisabledSysctl(),
        };

        int basic = simulatedSetupErrno is int simulated ? -Math.Abs(simulated) : KernelProbe.TrySetupFlags(Abi.SetupFlags.None);
        if (basic < 0)
        {
            caps.SetupError = Errno.Name(basic);
            caps.UnavailableReason = -basic switch
            {
                Errno.ENOSYS => "io_uring_setup failed with ENOSYS: this kernel has no io_uring",
                Errno.EPERM => caps.IoUringDisabledSysctl is > 0
                    ? $"io_uring_setup failed with EPERM: kernel.io_uring_disabled is {caps.IoUringDisabledSysctl}"
                    : "io_uring_setup failed with EPERM: blocked by a seccomp profile (containers' default since late 2023) or kernel.io_uring_disabled",
                _ => $"io_uring_setup failed with {Errno.Name(basic)}",
            };
            return caps;
        }

        var accepted = Abi.SetupFlags.None;
        foreach (var flag in new[] { Abi.SetupFlags.SubmitAll, Abi.SetupFlags.CoopTaskRun, Abi.SetupFlags.SingleIssuer, Abi.SetupFlags.NoSqArray, Abi.SetupFlags.SqPoll })
        {
            if (KernelProbe.TrySetupFlags(flag) == 0)
            {
                accepted |= flag;
            }
        }
        if ((accepted & Abi.SetupFlags.SingleIssuer) != 0 && KernelProbe.TrySetupFlags(Abi.SetupFlags.SingleIssuer | Abi.SetupFlags.DeferTaskRun) == 0)
        {
            accepted |= Abi.SetupFlags.DeferTaskRun;
        }
        caps.AcceptedSetupFlags = accepted;
        caps.SetupFlags = NamesOf(accepted);
        caps.SqPoll = (accepted & Abi.SetupFlags.SqPoll) != 0;

        using (var ring = Ring.Create(new RingOptions
        {
            SubmissionQueueEntries = 4,
            CompletionQueueEntries = 0,
            Flags = accepted & (Abi.SetupFlags.SingleIssuer | Abi.SetupFlags.DeferTaskRun),
        }))
        {
            caps.KernelFeatureBits = ring.Features;
            caps.Features = NamesOf(ring.Features);
            caps.RegisteredRingFd = ring.IsRingFdRegistered;
            var ops = KernelProbe.SupportedOpcodes(ring);
            caps.Opcodes = ops.OrderBy(o => (int)o).Select(OpcodeName).ToArray();
            caps.SendZeroCopy = ops.Contains(IoUringOpcode.SendZc);
            caps.BufferRings = KernelProbe.TryBufferRing(ring, incremental: false) == 0;
            caps.IncrementalBufferRings = caps.BufferRings && KernelProbe.TryBufferRing(ring, incremental: true) == 0;
        }
        caps.ReceiveBundles = (caps.KernelFeatureBits & KernelFeatures.RecvSendBundle) != 0;

        // DEFER_TASKRUN (6.1) postdates multishot accept (5.19) and multishot recv (6.0), so a ring that accepts it has both.
        bool modern = (accepted & Abi.SetupFlags.DeferTaskRun) != 0;
        caps.MultishotAccept = modern;
        caps.MultishotReceive = modern;

        var missing = new List<string>();
        if (!modern) missing.Add("SINGLE_ISSUER|DEFER_TASKRUN (Linux 6.1), and with them multishot accept and recv");
        if (!caps.BufferRings) missing.Add("provided buffer rings (Linux 5.19)");
        if ((caps.KernelFeatureBits & KernelFeatures.ExtArg) == 0) missing.Add("IORING_FEAT_EXT_ARG (Linux 5.11)");
        if ((caps.KernelFeatureBits & KernelFeatures.NoDrop) == 0) missing.Add("IORING_FEAT_NODROP (Linux 5.5)");
        if (missing.Count > 0)
        {
            caps.UnavailableReason = $"io_uring on kernel {caps.KernelRelease} lacks {string.Join(", ", missing)}";
            return caps;
        }
        caps.IsSupported = true;
        return caps;
    }

    private static string[] NamesOf<TEnum>(TEnum value) where TEnum : struct, Enum
    {
        ulong bits = Convert.ToUInt64(value);
        return Enum.GetValues<TEnum>()
            .Where(f => Convert.ToUInt64(f) != 0 && (bits & Convert.ToUInt64(f)) == Convert.ToUInt64(f))
            .Select(f => ToUpperSnake(f.ToString()))
            .ToArray();
    }

    /// <summary>The kernel's own spelling where PascalCase → UPPER_SNAKE gets it wrong (IORING_SETUP_DEFER_TASKRUN, not DEFER_TASK_RUN).</summary>
    private static readonly Dictionary<string, string> s_kernelNames = new()
    {
        ["DeferTaskRun"] = "DEFER_TASKRUN",
        ["CoopTaskRun"] = "COOP_TASKRUN",
        ["TaskRunFlag"] = "TASKRUN_FLAG",
        ["NoSqArray"] = "NO_SQARRAY",
        ["SqPoll"] = "SQPOLL",
        ["IoPoll"] = "IOPOLL",
        ["SqPollNonFixed"] = "SQPOLL_NONFIXED",
        ["Poll32Bits"] = "POLL_32BITS",
        ["RegRegRing"] = "REG_REG_RING",
        ["NoIoWait"] = "NO_IOWAIT",
        ["RwAttr"] = "RW_ATTR",
        ["NoDrop"] = "NODROP",
        ["RecvSendBundle"] = "RECVSEND_BUNDLE",
    };

    /// <summary>IORING_OP_* names by number, as in the kernel's enum io_uring_op (through 6.16).</summary>
    private static readonly string[] s_opcodeNames =
    [
        "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD", "POLL_REMOVE", "SYNC_FILE_RANGE",
        "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT",
        "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV",
        "OPENAT2", "EPOLL_CTL", "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT",
        "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR",
        "SOCKET", "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE",
        "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC", "EPOLL_WAIT", "READV_FIXED",
        "WRITEV_FIXED", "PIPE",
    ];

    private static string OpcodeName(IoUringOpcode op)
        => (int)op < s_opcodeNames.Length ? s_opcodeNames[(int)op] : $"OP_{(int)op}";

    private static string ToUpperSnake(string pascal)
    {
        if (s_kernelNames.TryGetValue(pascal, out string? name))
        {
            return name;
        }
        var sb = new StringBuilder();
        for (int i = 0; i < pascal.Length; i++)
        {
            if (i > 0 && char.IsUpper(pascal[i]) && !char.IsUpper(pascal[i - 1]))
            {
                sb.Append('_');
            }
            sb.Append(char.ToUpperInvariant(pascal[i]));
        }
        return sb.ToString();
    }

    /// <summary>A multi-line report of everything above.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"io_uring on {_platform ?? $"Linux {KernelRelease}"}: {(IsSupported ? "usable" : "NOT usable")}");
        if (UnavailableReason is not null) sb.AppendLine($"  reason:          {UnavailableReason}");
        sb.AppendLine($"  io_uring_disabled sysctl: {(IoUringDisabledSysctl?.ToString() ?? "absent")}");
        if (SetupError is not null) return sb.ToString();
        sb.AppendLine($"  setup flags:     {string.Join(" ", SetupFlags)}");
        sb.AppendLine($"  features:        {string.Join(" ", Features)}");
        sb.AppendLine($"  multishot accept/recv: {MultishotAccept}/{MultishotReceive}");
        sb.AppendLine($"  buffer rings:    {BufferRings} (incremental: {IncrementalBufferRings}, recv bundles: {ReceiveBundles})");
        sb.AppendLine($"  send_zc:         {SendZeroCopy}");
        sb.AppendLine($"  sqpoll:          {SqPoll}");
        sb.AppendLine($"  registered ring fd: {RegisteredRingFd}");
        sb.AppendLine($"  opcodes ({Opcodes.Count}): {string.Join(" ", Opcodes)}");
        return sb.ToString();
    }
}
