//! Times the layered layout on generated service graphs: `cargo run --release -p archtrace-web --example layout_bench`.

fn main() {
    for services in [10usize, 20, 50, 200, 500] {
        let names: Vec<String> = (0..services).map(|i| format!("service-{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Each service calls three others further down, like a layered system.
        let mut state = 42u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let mut edges = Vec::new();
        for i in 0..services {
            for _ in 0..3 {
                let span = services - i - 1;
                if span > 0 {
                    edges.push((i, i + 1 + next() % span.min(40)));
                }
            }
        }
        let started = std::time::Instant::now();
        let layout = archtrace_web::layout::layered(&refs, &edges);
        println!(
            "{services} services, {} edges: layout in {:.1} ms ({:.0} × {:.0})",
            edges.len(),
            started.elapsed().as_secs_f64() * 1e3,
            layout.width,
            layout.height
        );
    }
}
