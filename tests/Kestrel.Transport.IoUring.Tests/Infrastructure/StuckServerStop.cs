using System.Diagnostics;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Stopping a server in tests of defects that, unfixed, leave a connection stuck and so the stop hanging.</summary>
internal static class StuckServerStop
{
    /// <summary>Asserts the server stops within Kestrel's shutdown timeout (10 s in these tests), with room to spare.</summary>
    public static async Task AssertStopsPromptlyAsync(IoUringTestServer server)
    {
        var stopwatch = Stopwatch.StartNew();
        await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(8), $"shutdown took {stopwatch.Elapsed}");
    }

    /// <summary>Disposes the server: bounded after a passing test, not awaited after a failing one, whose stuck connection would hang it.</summary>
    public static async Task DisposeAsync(IoUringTestServer server, bool passed)
    {
        Task stop = server.DisposeAsync().AsTask();
        if (passed)
        {
            await stop.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }
}
