using System.Diagnostics;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// Debian's own Python, for tests that drive modules Debian packages for it (python3-seccomp, python3-grpcio): those
/// bind to /usr/bin/python3, not to whichever python3 comes first on PATH.
/// </summary>
internal static class DebianPython
{
    public const string Path = "/usr/bin/python3";

    /// <summary>Why <paramref name="module"/> cannot be imported (naming the package to install), or null when it can.</summary>
    public static string? WhyNotImportable(string module, string package)
    {
        if (!File.Exists(Path))
        {
            return $"{Path} is missing (apt-get install python3 {package}; .ci/run installs them)";
        }
        using var probe = Process.Start(new ProcessStartInfo(Path, ["-c", $"import {module}"]) { RedirectStandardError = true, UseShellExecute = false })!;
        probe.WaitForExit(10_000);
        return probe.ExitCode == 0 ? null : $"Python's {module} module is not installed (apt-get install {package}; .ci/run installs it)";
    }
}
