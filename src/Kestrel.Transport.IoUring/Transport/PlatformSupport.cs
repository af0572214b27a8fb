using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>io_uring is a Linux interface: anywhere else the transport must say so before it makes any system call.</summary>
internal static class PlatformSupport
{
    /// <summary>
    /// Null on Linux; otherwise why io_uring cannot serve here. <paramref name="simulatedOperatingSystem"/> (a test
    /// seam) stands for the real operating system when set.
    /// </summary>
    public static string? WhyUnsupported(string? simulatedOperatingSystem = null)
    {
        if (simulatedOperatingSystem is null && OperatingSystem.IsLinux())
        {
            return null;
        }
        string system = simulatedOperatingSystem ?? RuntimeInformation.OSDescription;
        return $"io_uring exists only on Linux and this is {system}";
    }
}
