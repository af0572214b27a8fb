using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.FileProviders;

namespace Benchmarks;

/// <summary>
/// Endpoints shaped like an ordinary app's, beside the TechEmpower ones: minimal APIs behind routing, responses
/// serialised by System.Text.Json through <see cref="TypedResults.Json{TValue}(TValue, System.Text.Json.JsonSerializerOptions?, string?, int?)"/>,
/// handlers that do real work per request, uploads read to the end, and static files.
/// <list type="bullet">
/// <item><c>GET /api/orders/{count}?work=N</c>: <c>count</c> orders (1-50: about 300 B each, so 0.3-16 KB), built,
/// priced, sorted and hashed <c>N</c> times over (default 8: tens of microseconds of CPU; 50: a few hundred).</item>
/// <item><c>POST /upload</c>: reads the body to the end and answers its length.</item>
/// <item><c>GET /static/{name}</c>: files of 1 KiB to 1 MiB, written to a temporary folder at start
/// (<see cref="StaticFileNames"/>), served by <c>UseStaticFiles</c>.</item>
/// </list>
/// </summary>
public static class AppEndpoints
{
    public const int MaxOrders = 50;
    private const int MaxWork = 1000;

    /// <summary>The static files and their sizes.</summary>
    public static readonly (string Name, int Size)[] StaticFileNames =
        [("1k.txt", 1024), ("16k.txt", 16 * 1024), ("128k.txt", 128 * 1024), ("1m.txt", 1024 * 1024)];

    public static void ConfigureServices(IServiceCollection services)
    {
        services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, AppJsonContext.Default));
    }

    /// <summary>Adds routing, the endpoints and the static files behind whatever the pipeline already has.</summary>
    public static void Map(WebApplication app)
    {
        string root = WriteStaticFiles();
        app.Lifetime.ApplicationStopped.Register(() => Directory.Delete(root, recursive: true));
        app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(root), RequestPath = "/static" });
        app.UseRouting();
        app.MapGet("/api/orders/{count:int}", Results<JsonHttpResult<OrderPage>, BadRequest> (int count, int? work) =>
            count is < 1 or > MaxOrders || work is < 0 or > MaxWork
                ? TypedResults.BadRequest()
                : TypedResults.Json(OrderPage.Build(count, work ?? 8)));
        app.MapPost("/upload", ReadUploadAsync);
    }

    private static async Task<long> ReadUploadAsync(HttpRequest request)
    {
        long length = 0;
        PipeReader body = request.BodyReader;
        while (true)
        {
            ReadResult result = await body.ReadAsync();
            length += result.Buffer.Length;
            body.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return length;
            }
        }
    }

    private static string WriteStaticFiles()
    {
        string root = Directory.CreateTempSubdirectory("benchmarks-static-").FullName;
        foreach ((string name, int size) in StaticFileNames)
        {
            var content = new byte[size];
            for (int i = 0; i < size; i++)
            {
                content[i] = (byte)('a' + i % 26);
            }
            File.WriteAllBytes(Path.Combine(root, name), content);
        }
        return root;
    }
}

public sealed record OrderLine(string Sku, string Description, int Quantity, decimal UnitPrice);

public sealed record Order(int Id, string Customer, string Email, DateTimeOffset Placed, string Status, OrderLine[] Lines, decimal Total);

public sealed record OrderPage(int Count, decimal GrandTotal, string Digest, Order[] Orders)
{
    private static readonly string[] s_statuses = ["pending", "paid", "shipped", "delivered"];

    /// <summary>Builds <paramref name="count"/> orders, prices and sorts them, and hashes the page <paramref name="work"/> times.</summary>
    public static OrderPage Build(int count, int work)
    {
        var orders = new Order[count];
        DateTimeOffset now = DateTimeOffset.UtcNow;
        for (int i = 0; i < count; i++)
        {
            var lines = new OrderLine[1 + i % 3];
            for (int j = 0; j < lines.Length; j++)
            {
                lines[j] = new OrderLine($"SKU-{i:D4}-{j}", $"Item {j} of order {i}", 1 + (i + j) % 5, 9.99m + j);
            }
            decimal total = lines.Sum(l => l.Quantity * l.UnitPrice);
            orders[i] = new Order(i + 1, $"Customer {i % 17}", $"customer{i % 17}@example.com", now.AddMinutes(-i),
                s_statuses[i % s_statuses.Length], lines, total);
        }
        Array.Sort(orders, (a, b) => b.Total.CompareTo(a.Total));
        return new OrderPage(count, orders.Sum(o => o.Total), ComputeDigest(orders, work), orders);
    }

    private static string ComputeDigest(Order[] orders, int work)
    {
        // Each round hashes the page's ids and totals, chained through the previous round's hash.
        string ids = string.Join(',', orders.Select(o => o.Id + ":" + o.Total));
        byte[] text = new byte[SHA256.HashSizeInBytes + System.Text.Encoding.UTF8.GetByteCount(ids)];
        System.Text.Encoding.UTF8.GetBytes(ids, text.AsSpan(SHA256.HashSizeInBytes));
        Span<byte> chain = text.AsSpan(0, SHA256.HashSizeInBytes);
        for (int i = 0; i < work; i++)
        {
            SHA256.HashData(text, chain);
        }
        return Convert.ToHexString(chain);
    }
}

[JsonSerializable(typeof(OrderPage))]
public partial class AppJsonContext : JsonSerializerContext
{
}
