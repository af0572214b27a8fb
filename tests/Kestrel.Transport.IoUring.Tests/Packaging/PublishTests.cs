using System.Text.RegularExpressions;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Packaging;

/// <summary>Publishes run one at a time and apart from the heavy protocol tests: each one keeps both cores busy.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PublishCollection
{
    public const string Name = "Packaging (publish, serial)";
}

/// <summary>
/// The library in trimmed and native AOT apps: samples/AotSample (the webapiaot template's settings plus UseIoUring)
/// published trimmed and as native AOT. Neither publish may warn about this library (IL2026, IL2104, IL3050, …), and
/// the AOT binary must serve over io_uring. Each publish uses its own artifacts folder, so it never touches the
/// build outputs the other tests run from.
/// </summary>
[Collection(PublishCollection.Name)]
public sealed partial class PublishTests(ITestOutputHelper output)
{
    private static readonly string Project = RepositoryPaths.Combine("samples", "AotSample", "AotSample.csproj");

    private static string ArtifactsOf(string flavour) => Path.Combine(Path.GetTempPath(), $"iouring-publish-{flavour}-{Environment.ProcessId}");

    private static void DeleteArtifacts(string flavour)
    {
        if (Directory.Exists(ArtifactsOf(flavour))) Directory.Delete(ArtifactsOf(flavour), recursive: true);
    }

    private async Task<(int ExitCode, string Log, string OutputDirectory)> PublishAsync(string flavour, params string[] properties)
    {
        string artifacts = ArtifactsOf(flavour);
        string outputDirectory = Path.Combine(artifacts, "out");
        if (Directory.Exists(artifacts)) Directory.Delete(artifacts, recursive: true);
        string[] arguments =
        [
            "publish", Project, "-c", "Release", "-r", "linux-x64", "-o", outputDirectory, "--artifacts-path", artifacts,
            // Every trim/AOT warning reported one by one (not collapsed per assembly), and none turned into an error,
            // so the log shows them all.
            "-p:TreatWarningsAsErrors=false", "-p:TrimmerSingleWarn=false", "-p:IlcSingleWarn=false",
            .. properties.Select(p => "-p:" + p),
        ];
        var started = DateTime.UtcNow;
        using var publish = ChildProcess.Start("dotnet", arguments, workingDirectory: RepositoryPaths.Root);
        int exitCode = await publish.WaitForExitAsync(TimeSpan.FromMinutes(8));
        output.WriteLine($"dotnet {string.Join(' ', arguments)}: exit {exitCode} in {(DateTime.UtcNow - started).TotalSeconds:F0} s");
        return (exitCode, publish.Output, outputDirectory);
    }

    /// <summary>
    /// Warning lines (ILxxxx) that name this library or its API: its own code, or a call into it such as the IL2026
    /// that UseIoUring's reflection-based configuration binding caused.
    /// </summary>
    private static List<string> WarningsAboutTheLibrary(string log)
        => log.Split('\n').Where(l => TrimWarning().IsMatch(l) && l.Contains("IoUring", StringComparison.Ordinal)).Distinct().ToList();

    [GeneratedRegex(@"warning IL\d{4}")]
    private static partial Regex TrimWarning();

    [Fact]
    public async Task TrimmedPublishShowsNoWarningAboutTheLibrary()
    {
        var (exitCode, log, outputDirectory) = await PublishAsync("trimmed", "PublishAot=false", "PublishTrimmed=true");
        using var cleanUp = new Cleanup(() => DeleteArtifacts("trimmed"));
        Assert.True(exitCode == 0, log);
        Assert.True(File.Exists(Path.Combine(outputDirectory, "Kestrel.Transport.IoUring.dll")), "the library is not in the trimmed output");
        var warnings = WarningsAboutTheLibrary(log);
        Assert.True(warnings.Count == 0, string.Join('\n', warnings));
        output.WriteLine($"IL warnings of the whole publish: {log.Split('\n').Count(l => TrimWarning().IsMatch(l))}");
    }

    [RequiresNativeToolchainFact]
    public async Task NativeAotPublishShowsNoWarningAboutTheLibraryAndServesOverIoUring()
    {
        var (exitCode, log, outputDirectory) = await PublishAsync("aot");
        using var cleanUp = new Cleanup(() => DeleteArtifacts("aot"));
        Assert.True(exitCode == 0, log);
        var warnings = WarningsAboutTheLibrary(log);
        Assert.True(warnings.Count == 0, string.Join('\n', warnings));

        using var app = ChildProcess.Start(Path.Combine(outputDirectory, "AotSample"), ["--urls", "http://127.0.0.1:0"], workingDirectory: outputDirectory);
        Uri address = await app.ListeningAsync(TimeSpan.FromSeconds(30));
        using var client = new HttpClient { BaseAddress = address };
        Assert.StartsWith("Hello from native AOT (served over io_uring, ring", await client.GetStringAsync("/"));
        Assert.Contains("usable", await client.GetStringAsync("/capabilities"));
        Assert.Contains("io_uring transport started", app.Output);
    }
}

/// <summary>Runs an action when disposed.</summary>
internal sealed class Cleanup(Action action) : IDisposable
{
    public void Dispose() => action();
}

/// <summary>A [Fact] that needs clang and zlib (native AOT's linker inputs); skipped, saying so, without them.</summary>
public sealed class RequiresNativeToolchainFactAttribute : FactAttribute
{
    public RequiresNativeToolchainFactAttribute()
    {
        bool clang = Environment.GetEnvironmentVariable("PATH")?.Split(':').Any(d => File.Exists(Path.Combine(d, "clang"))) == true;
        bool zlib = File.Exists("/usr/include/zlib.h");
        if (!clang || !zlib)
        {
            Skip = "native AOT needs clang and zlib1g-dev (apt-get install clang zlib1g-dev; .ci/run installs them)";
        }
    }
}
