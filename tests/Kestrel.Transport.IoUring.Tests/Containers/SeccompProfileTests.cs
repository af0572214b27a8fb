using System.Diagnostics;
using System.Text.Json.Nodes;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Containers;

/// <summary>deploy/seccomp/add-io-uring.py: a default profile plus the io_uring rule, nothing else changed.</summary>
public sealed class SeccompProfileTests
{
    private const string DefaultLike = """
        {
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 1,
          "archMap": [ { "architecture": "SCMP_ARCH_X86_64", "subArchitectures": [ "SCMP_ARCH_X86" ] } ],
          "syscalls": [
            { "names": [ "accept", "read", "write" ], "action": "SCMP_ACT_ALLOW" },
            { "names": [ "io_uring_setup", "io_uring_enter" ], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 },
            { "names": [ "clone3" ], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": { "caps": [ "CAP_SYS_ADMIN" ] } }
          ]
        }
        """;

    private static string Apply(string profileJson)
    {
        string input = Path.Combine(Path.GetTempPath(), $"seccomp-default-{Guid.NewGuid():N}.json");
        File.WriteAllText(input, profileJson);
        try
        {
            var psi = new ProcessStartInfo("python3", [RepositoryPaths.Combine("deploy", "seccomp", "add-io-uring.py"), input])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var p = Process.Start(psi)!;
            string stdout = p.StandardOutput.ReadToEnd();
            string stderr = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, stderr);
            return stdout;
        }
        finally
        {
            File.Delete(input);
        }
    }

    [Fact]
    public void TheProfileIsTheDefaultPlusOneRuleAllowingTheThreeSyscalls()
    {
        var profile = JsonNode.Parse(Apply(DefaultLike))!;
        Assert.Equal("SCMP_ACT_ERRNO", (string?)profile["defaultAction"]);
        Assert.Equal("SCMP_ARCH_X86_64", (string?)profile["archMap"]![0]!["architecture"]);
        var rules = profile["syscalls"]!.AsArray();
        Assert.Equal(3, rules.Count); // the ERRNO rule held only io_uring calls: gone; the other two kept as they were
        Assert.Equal(["accept", "read", "write"], rules[0]!["names"]!.AsArray().Select(n => (string)n!));
        Assert.Equal("clone3", (string?)rules[1]!["names"]![0]);
        Assert.Equal(38, (int)rules[1]!["errnoRet"]!);
        var added = rules[2]!;
        Assert.Equal("SCMP_ACT_ALLOW", (string?)added["action"]);
        Assert.Equal(["io_uring_setup", "io_uring_enter", "io_uring_register"], added["names"]!.AsArray().Select(n => (string)n!));

        // Idempotent: applying it to its own output changes nothing.
        Assert.Equal(profile.ToJsonString(), JsonNode.Parse(Apply(profile.ToJsonString()))!.ToJsonString());
    }
}
