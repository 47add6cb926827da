// Behavioural model of the ECP5 MULT18X18D (18x18 multiplier of the sysDSP slice) for simulation and formal
// equivalence checks of cdmqta.hw.mac.MAC(dsp="ecp5"). yosys ships only a black box of this primitive.
//
// Modelled subset (anything else fails elaboration through the missing module MULT18X18D_unsupported_parameter):
//   * REG_INPUTA_CLK, REG_INPUTB_CLK, REG_PIPELINE_CLK, REG_OUTPUT_CLK: "NONE" or "CLK0" (registers on CLK0's
//     rising edge, enabled by CE0, reset to 0 by RST0 synchronously: REG_*_CE = "CE0", REG_*_RST = "RST0",
//     RESETMODE = "SYNC"); the C input registers and the cascade / shift ports (SRIA/SRIB/ROA/...) are not
//     modelled, SOURCEA / SOURCEB must be 0 (A and B come from the A/B ports) and MULT_BYPASS = "DISABLED".
//   * SIGNEDA / SIGNEDB: 1 = two's complement operand; registered with A / B when the input registers are on.
//   * P = A * B (36 bits), through the pipeline register and then the output register where enabled.
// The function and the register stages follow Lattice's sysDSP usage guide (FPGA-TN-02205) for MULT18X18D.
// The generator ties SIGNEDA = SIGNEDB = 1, CE0 = 1 and RST0 = the sync domain's reset.
module MULT18X18D(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17, B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17, C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3, P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35, SIGNEDP);
    input A0;
    input A1;
    input A2;
    input A3;
    input A4;
    input A5;
    input A6;
    input A7;
    input A8;
    input A9;
    input A10;
    input A11;
    input A12;
    input A13;
    input A14;
    input A15;
    input A16;
    input A17;
    input B0;
    input B1;
    input B2;
    input B3;
    input B4;
    input B5;
    input B6;
    input B7;
    input B8;
    input B9;
    input B10;
    input B11;
    input B12;
    input B13;
    input B14;
    input B15;
    input B16;
    input B17;
    input C0;
    input C1;
    input C2;
    input C3;
    input C4;
    input C5;
    input C6;
    input C7;
    input C8;
    input C9;
    input C10;
    input C11;
    input C12;
    input C13;
    input C14;
    input C15;
    input C16;
    input C17;
    input SIGNEDA;
    input SIGNEDB;
    input SOURCEA;
    input SOURCEB;
    input CLK0;
    input CLK1;
    input CLK2;
    input CLK3;
    input CE0;
    input CE1;
    input CE2;
    input CE3;
    input RST0;
    input RST1;
    input RST2;
    input RST3;
    output P0;
    output P1;
    output P2;
    output P3;
    output P4;
    output P5;
    output P6;
    output P7;
    output P8;
    output P9;
    output P10;
    output P11;
    output P12;
    output P13;
    output P14;
    output P15;
    output P16;
    output P17;
    output P18;
    output P19;
    output P20;
    output P21;
    output P22;
    output P23;
    output P24;
    output P25;
    output P26;
    output P27;
    output P28;
    output P29;
    output P30;
    output P31;
    output P32;
    output P33;
    output P34;
    output P35;
    output SIGNEDP;
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    localparam REG_A = REG_INPUTA_CLK == "CLK0";
    localparam REG_B = REG_INPUTB_CLK == "CLK0";
    localparam REG_M = REG_PIPELINE_CLK == "CLK0";
    localparam REG_P = REG_OUTPUT_CLK == "CLK0";
    generate
        if (!(REG_A || REG_INPUTA_CLK == "NONE") || !(REG_B || REG_INPUTB_CLK == "NONE")
            || !(REG_M || REG_PIPELINE_CLK == "NONE") || !(REG_P || REG_OUTPUT_CLK == "NONE")
            || REG_INPUTC_CLK != "NONE" || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0"
            || REG_PIPELINE_CE != "CE0" || REG_OUTPUT_CE != "CE0" || REG_INPUTA_RST != "RST0"
            || REG_INPUTB_RST != "RST0" || REG_PIPELINE_RST != "RST0" || REG_OUTPUT_RST != "RST0"
            || RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED")
            MULT18X18D_unsupported_parameter unsupported();
    endgenerate

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_q = 18'd0, b_q = 18'd0;
    reg sa_q = 1'b0, sb_q = 1'b0;
    reg [35:0] m_q = 36'd0, p_q = 36'd0;
    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 18'd0; b_q <= 18'd0; sa_q <= 1'b0; sb_q <= 1'b0;
        end else if (CE0) begin
            a_q <= a_in; b_q <= b_in; sa_q <= SIGNEDA; sb_q <= SIGNEDB;
        end
    end
    wire [17:0] a = REG_A ? a_q : a_in;
    wire [17:0] b = REG_B ? b_q : b_in;
    wire sa = REG_A ? sa_q : SIGNEDA;
    wire sb = REG_B ? sb_q : SIGNEDB;
    // 19-bit operands: sign- or zero-extended, so one signed multiply covers all four sign modes
    wire signed [18:0] a_x = {sa & a[17], a};
    wire signed [18:0] b_x = {sb & b[17], b};
    wire signed [37:0] full = a_x * b_x;
    wire [35:0] m = full[35:0];
    always @(posedge CLK0) begin
        if (RST0) begin
            m_q <= 36'd0; p_q <= 36'd0;
        end else if (CE0) begin
            m_q <= m; p_q <= REG_M ? m_q : m;
        end
    end
    wire [35:0] p = REG_P ? p_q : (REG_M ? m_q : m);
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
    assign SIGNEDP = 1'b0;  // not modelled (unused by the generator)
endmodule
