using System.Text;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>Writes what a chaos run did (seeds, rows, clients by kind and outcome, faults) and what failed, as markdown.</summary>
internal static class ChaosReport
{
    /// <summary>The command that replays one seed exactly as it ran (same row, clients and sizes).</summary>
    public static string ReplayCommand(ChaosPlan plan, string transport)
        => $"ROW={plan.Row.Name} CLIENTS={plan.Clients.Count} MAX_MB={plan.MaxTransfer >> 20} TRANSPORT={transport} loadtests/chaos.sh 0 {plan.Seed}";

    public static string Summary(ChaosRunResult r)
    {
        var text = new StringBuilder();
        text.AppendLine($"seed {r.Plan.Seed} on {r.Transport}, row {r.Plan.Row.Name}: {(r.Passed ? "passed" : "FAILED")} in {r.Elapsed.TotalSeconds:F1}s; faults injected: {r.Faults}");
        foreach (var failure in r.Failures)
        {
            text.AppendLine($"  - {failure}");
        }
        if (!r.Passed)
        {
            text.AppendLine($"  replay: {ReplayCommand(r.Plan, r.Transport)}");
        }
        return text.ToString();
    }

    public static string Markdown(IReadOnlyList<ChaosRunResult> runs, TimeSpan elapsed)
    {
        var md = new StringBuilder();
        md.AppendLine($"# Chaos run, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
        md.AppendLine();
        md.AppendLine($"{runs.Count} runs in {elapsed.TotalMinutes:F1} min: {runs.Count(r => r.Passed)} passed, {runs.Count(r => !r.Passed)} failed.");
        md.AppendLine();
        md.AppendLine("| seed | transport | row | clients | pool | faults planned | faults injected | time | result |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var r in runs)
        {
            md.AppendLine($"| {r.Plan.Seed} | {r.Transport} | {r.Plan.Row.Name} | {r.Clients.Count} | {r.Plan.Pool} | {Describe(r.Plan.Faults)} | {r.Faults} | {r.Elapsed.TotalSeconds:F0}s | {(r.Passed ? "pass" : "**FAIL**")} |");
        }
        md.AppendLine();
        md.AppendLine("## Connections by kind and outcome");
        md.AppendLine();
        md.AppendLine("| kind | " + string.Join(" | ", Enum.GetNames<ClientOutcome>()) + " |");
        md.AppendLine("|---|" + string.Concat(Enum.GetNames<ClientOutcome>().Select(_ => "---|")));
        foreach (var kind in Enum.GetValues<ClientKind>())
        {
            var ofKind = runs.SelectMany(r => r.Clients).Where(c => c.Plan.Kind == kind).ToList();
            md.AppendLine($"| {kind} | " + string.Join(" | ", Enum.GetValues<ClientOutcome>().Select(o => ofKind.Count(c => c.Outcome == o))) + " |");
        }
        md.AppendLine();
        md.AppendLine("## Failures");
        md.AppendLine();
        foreach (var r in runs.Where(r => !r.Passed))
        {
            md.AppendLine($"### seed {r.Plan.Seed} ({r.Transport}, {r.Plan.Row.Name})");
            md.AppendLine();
            md.AppendLine($"Replay: `{ReplayCommand(r.Plan, r.Transport)}`");
            md.AppendLine();
            foreach (var failure in r.Failures.Take(30))
            {
                md.AppendLine($"- {failure}");
            }
            md.AppendLine();
            md.AppendLine("```");
            md.Append(r.Plan.Describe());
            md.AppendLine("```");
            md.AppendLine();
        }
        return md.ToString();
    }

    private static string Describe(FaultPlan f)
        => f.Any ? $"send {f.DirectSendPerMille}‰, enter {f.EnterPerMille}‰, delay {f.DelayPerMille}‰, recv-end {f.ReceiveEndPerMille}‰{(f.FailARing ? ", ring failure" : "")}" : "none";
}
