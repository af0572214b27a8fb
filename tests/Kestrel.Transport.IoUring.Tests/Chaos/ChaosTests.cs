using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>
/// Seeded chaos against a real server over loopback: each seed draws clients, handlers, faults and thread-pool stress
/// from one System.Random and checks every invariant on every connection (see <see cref="ChaosRunner"/>). The CI set
/// is a fixed list of seeds, one per options row; loadtests/chaos.sh runs random seeds for as long as it is asked to.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class ChaosTests(ITestOutputHelper output)
{
    public const int CiClients = 20;

    /// <summary>Seed and row pairs; each row at least once.</summary>
    public static TheoryData<int, string> CiSeeds()
    {
        var data = new TheoryData<int, string>();
        int seed = 1001;
        foreach (var row in ChaosRow.All)
        {
            data.Add(seed++, row.Name);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(CiSeeds))]
    public async Task SeedKeepsEveryInvariantOnIoUring(int seed, string row)
    {
        var plan = ChaosPlan.Create(seed, row, CiClients, ChaosPlan.CiMaxTransfer);
        output.WriteLine(plan.Describe());
        var result = await ChaosRunner.RunAsync(plan, TransportUnderTest.IoUringRing, output.WriteLine);
        string summary = ChaosReport.Summary(result);
        output.WriteLine(summary);
        Assert.True(result.Passed, summary);
    }

    /// <summary>The same clients against Kestrel's Sockets transport: where Sockets itself breaks an invariant, that is reported, not failed.</summary>
    [Theory]
    [InlineData(1001, "direct-pool")]
    [InlineData(1009, "pressure")]
    public async Task SeedOnSocketsForReference(int seed, string row)
    {
        var plan = ChaosPlan.Create(seed, row, CiClients, ChaosPlan.CiMaxTransfer) with { Faults = FaultPlan.None };
        var result = await ChaosRunner.RunAsync(plan, TransportUnderTest.Sockets, output.WriteLine);
        output.WriteLine(ChaosReport.Summary(result));
        Assert.NotEmpty(result.Clients);
    }

    /// <summary>The long run's entry point, driven by loadtests/chaos.sh through environment variables; skipped otherwise.</summary>
    [ChaosLongRunFact]
    public async Task LongRun()
    {
        var settings = ChaosLongRunSettings.FromEnvironment();
        var runs = await ChaosLongRun.RunAsync(settings, output.WriteLine);
        Assert.All(runs, r => Assert.True(r.Passed || r.Transport == TransportUnderTest.Sockets, ChaosReport.Summary(r)));
    }
}

/// <summary>A fact that runs only when loadtests/chaos.sh set CHAOS_MINUTES.</summary>
public sealed class ChaosLongRunFactAttribute : FactAttribute
{
    public ChaosLongRunFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("CHAOS_MINUTES") is null)
        {
            Skip = "the long chaos run: loadtests/chaos.sh MINUTES [SEED]";
        }
    }
}
