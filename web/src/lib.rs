//! The report viewer: the pages of the admin listener, and the same views as one self-contained
//! HTML file. The graph is laid out on the server and drawn as SVG; charts come from plotters.

pub mod charts;
pub mod layout;
pub mod pages;
pub mod report;
pub mod server;
pub mod svg;
pub mod timefmt;
pub mod view;
