// Simulation model of the Lattice ECP5 MULT18X18D in the one mode sqaccel.hw.dsp uses: an
// 18 x 18 multiply (signed or unsigned per operand), each of the A, B, pipeline and output
// registers either off ("NONE") or clocked by CLK0 with CE0 and a synchronous RST0. Any
// other setting stops the simulation at its start, so the model never stands in for a mode
// it does not describe. The C operand, cascades and the shift-in ports are not modelled.
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0",
    parameter REG_INPUTA_RST = "RST0",
    parameter REG_INPUTB_CLK = "NONE", parameter REG_INPUTB_CE = "CE0",
    parameter REG_INPUTB_RST = "RST0",
    parameter REG_INPUTC_CLK = "NONE", parameter REG_INPUTC_CE = "CE0",
    parameter REG_INPUTC_RST = "RST0",
    parameter REG_PIPELINE_CLK = "NONE", parameter REG_PIPELINE_CE = "CE0",
    parameter REG_PIPELINE_RST = "RST0",
    parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0",
    parameter REG_OUTPUT_RST = "RST0",
    parameter CLK0_DIV = "ENABLED", parameter CLK1_DIV = "ENABLED",
    parameter CLK2_DIV = "ENABLED", parameter CLK3_DIV = "ENABLED",
    parameter HIGHSPEED_CLK = "NONE", parameter GSR = "ENABLED",
    parameter CAS_MATCH_REG = "FALSE", parameter SOURCEB_MODE = "B_SHIFT",
    parameter MULT_BYPASS = "DISABLED", parameter RESETMODE = "SYNC"
) (
    input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CE0, RST0,
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
    output P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33,
    output P34, P35
);
    localparam IN_A = REG_INPUTA_CLK == "CLK0";
    localparam IN_B = REG_INPUTB_CLK == "CLK0";
    localparam PIPE = REG_PIPELINE_CLK == "CLK0";
    localparam OUT = REG_OUTPUT_CLK == "CLK0";

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && !IN_A) || (REG_INPUTB_CLK != "NONE" && !IN_B)
            || (REG_PIPELINE_CLK != "NONE" && !PIPE) || (REG_OUTPUT_CLK != "NONE" && !OUT)
            || (IN_A && (REG_INPUTA_CE != "CE0" || REG_INPUTA_RST != "RST0"))
            || (IN_B && (REG_INPUTB_CE != "CE0" || REG_INPUTB_RST != "RST0"))
            || (PIPE && (REG_PIPELINE_CE != "CE0" || REG_PIPELINE_RST != "RST0"))
            || (OUT && (REG_OUTPUT_CE != "CE0" || REG_OUTPUT_RST != "RST0"))
            || REG_INPUTC_CLK != "NONE" || MULT_BYPASS != "DISABLED" || RESETMODE != "SYNC")
            $fatal(1, "MULT18X18D model: unsupported setting");
    end

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3,
                        A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3,
                        B2, B1, B0};
    reg [17:0] a_q, b_q;
    reg sa_q, sb_q;
    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 0; b_q <= 0; sa_q <= 0; sb_q <= 0;
        end else if (CE0) begin
            a_q <= a_in; b_q <= b_in; sa_q <= SIGNEDA; sb_q <= SIGNEDB;
        end
    end
    // The signedness flags travel with their operand.
    wire [17:0] a = IN_A ? a_q : a_in;
    wire [17:0] b = IN_B ? b_q : b_in;
    wire sa = IN_A ? sa_q : SIGNEDA;
    wire sb = IN_B ? sb_q : SIGNEDB;
    wire signed [35:0] product = $signed({sa & a[17], a}) * $signed({sb & b[17], b});

    reg [35:0] pipe_q, out_q;
    wire [35:0] after_pipe = PIPE ? pipe_q : product;
    always @(posedge CLK0) begin
        if (RST0) begin
            pipe_q <= 0; out_q <= 0;
        end else if (CE0) begin
            pipe_q <= product; out_q <= after_pipe;
        end
    end
    wire [35:0] p = OUT ? out_q : after_pipe;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
            P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
            P1, P0} = p;
endmodule
